# syntax=docker/dockerfile:1
# One image, two roles: `email-relay relay ...` (the data plane) and `email-relay operator ...`.
# Multi-stage: build with the full Node image, run on distroless (no shell, no package manager),
# as the non-root user 65532, with nothing written outside mounted volumes (read-only root ready).

ARG NODE_VERSION=20.20
FROM node:${NODE_VERSION}-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev --no-audit --no-fund

FROM gcr.io/distroless/nodejs20-debian12:nonroot
WORKDIR /app
ENV NODE_ENV=production
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY crds ./crds
USER 65532:65532
# 25: SMTP (pods set net.ipv4.ip_unprivileged_port_start=0), 9090: relay HTTP, 8080: operator HTTP
EXPOSE 25 9090 8080
# V8 flags (measured in bench/README.md): smaller young generation and slower heap growth keep a
# relay with 100k queued messages under 200 MB RSS, without a hard heap cap that a bigger queue
# could hit. In argv, not NODE_OPTIONS (which refuses --heap-growing-percent). bench/relay.ts
# reads them from this line, so the benchmark runs the relay as the image does.
ENTRYPOINT ["/nodejs/bin/node", "--max-semi-space-size=8", "--heap-growing-percent=50", "/app/dist/cli.js"]
CMD ["--help"]
