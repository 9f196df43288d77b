import { describe, expect, it } from 'vitest';
import { costMatching } from '../../../bench/instructions.ts';

// callgrind_annotate --inclusive=no output, as valgrind 3.19 prints it (abridged).
const ANNOTATED = `--------------------------------------------------------------------------------
Ir
--------------------------------------------------------------------------------
5,859,196,572 (100.0%)  PROGRAM TOTALS

--------------------------------------------------------------------------------
Ir                    file:function
--------------------------------------------------------------------------------
182,374,419 ( 3.11%)  ???:Builtins_LoadIC [/usr/bin/node]
154,140,336 ( 2.63%)  ???:v8::internal::compiler::GraphReducer::ReduceTop() [/usr/bin/node]
 50,559,229 ( 0.86%)  ???:sha256_block_data_order_avx2 [/usr/bin/node]
     12,000 ( 0.00%)  ???:v8::internal::Zone::Expand(unsigned long) [/usr/bin/node]
`;

describe('costMatching (the compiler part of a callgrind count)', () => {
  it('sums the self cost of the matching functions, not the total line', () => {
    expect(costMatching(ANNOTATED, /v8::internal::compiler::|v8::internal::Zone::/)).toBe(
      154_140_336 + 12_000,
    );
    expect(costMatching(ANNOTATED, /PROGRAM TOTALS|sha256/)).toBe(50_559_229);
    expect(costMatching(ANNOTATED, /nothing like this/)).toBe(0);
  });
});
