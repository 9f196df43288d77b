// powercut-fs: a FUSE file system in memory that keeps, besides what programs see, what a disk
// would still hold after a power cut: a file's data as of its last fsync/fdatasync, a directory's
// entries as of its last fsync (the strict model: nothing reaches the platter unasked). On SIGUSR1
// it writes that durable image into DUMP and exits, which is the power cut. Started with SEED, it
// begins from that directory's contents, all durable (the disk as the last cut left it).
//
// It has no mknod: creating a unix socket on it fails with ENOSYS, as on some network and FUSE
// volumes.
//
// usage: powercut-fs MOUNTPOINT DUMP [SEED]
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

var mu sync.Mutex // one lock for the whole tree: simple, and the spool tests are not about speed

type file struct {
	fs.Inode
	data, durable []byte
	mtime         time.Time
}

type dir struct {
	fs.Inode
	durable map[string]fs.InodeEmbedder
}

func newDir() *dir { return &dir{durable: map[string]fs.InodeEmbedder{}} }

var (
	_ = (fs.NodeCreater)((*dir)(nil))
	_ = (fs.NodeMkdirer)((*dir)(nil))
	_ = (fs.NodeUnlinker)((*dir)(nil))
	_ = (fs.NodeRmdirer)((*dir)(nil))
	_ = (fs.NodeRenamer)((*dir)(nil))
	_ = (fs.NodeLinker)((*dir)(nil))
	_ = (fs.NodeFsyncer)((*dir)(nil))
	_ = (fs.NodeStatfser)((*dir)(nil))
	_ = (fs.NodeGetattrer)((*dir)(nil))
	_ = (fs.NodeMknoder)((*dir)(nil))
	_ = (fs.NodeOpener)((*file)(nil))
	_ = (fs.NodeReader)((*file)(nil))
	_ = (fs.NodeWriter)((*file)(nil))
	_ = (fs.NodeFsyncer)((*file)(nil))
	_ = (fs.NodeGetattrer)((*file)(nil))
	_ = (fs.NodeSetattrer)((*file)(nil))
)

func (d *dir) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFDIR | 0o755
	out.Nlink = 2
	return 0
}

func (d *dir) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	out.Bsize = 4096
	out.Frsize = 4096
	out.Blocks = 1 << 20
	out.Bfree = 1 << 19
	out.Bavail = 1 << 19
	out.Files = 1 << 20
	out.Ffree = 1 << 19
	out.NameLen = 255
	return 0
}

func (d *dir) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	mu.Lock()
	defer mu.Unlock()
	if d.GetChild(name) != nil {
		return nil, nil, 0, syscall.EEXIST
	}
	f := &file{mtime: time.Now()}
	ch := d.NewInode(ctx, f, fs.StableAttr{Mode: syscall.S_IFREG})
	f.fill(&out.Attr)
	return ch, nil, fuse.FOPEN_DIRECT_IO, 0
}

func (d *dir) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	mu.Lock()
	defer mu.Unlock()
	if d.GetChild(name) != nil {
		return nil, syscall.EEXIST
	}
	ch := d.NewInode(ctx, newDir(), fs.StableAttr{Mode: syscall.S_IFDIR})
	out.Attr.Mode = syscall.S_IFDIR | 0o755
	return ch, 0
}

func (d *dir) Unlink(ctx context.Context, name string) syscall.Errno { return 0 }

func (d *dir) Rmdir(ctx context.Context, name string) syscall.Errno {
	mu.Lock()
	defer mu.Unlock()
	ch := d.GetChild(name)
	if ch != nil && len(ch.Children()) > 0 {
		return syscall.ENOTEMPTY
	}
	return 0
}

func (d *dir) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	return 0
}

func (d *dir) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	mu.Lock()
	defer mu.Unlock()
	if d.GetChild(name) != nil {
		return nil, syscall.EEXIST
	}
	if f, ok := target.(*file); ok {
		f.fill(&out.Attr)
	}
	return target.EmbeddedInode(), 0
}

// Fsync of a directory: its entries as they are now are what a cut leaves.
func (d *dir) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	mu.Lock()
	defer mu.Unlock()
	d.durable = map[string]fs.InodeEmbedder{}
	for name, ch := range d.Children() {
		d.durable[name] = ch.Operations()
	}
	return 0
}

func (f *file) fill(a *fuse.Attr) {
	a.Mode = syscall.S_IFREG | 0o644
	a.Size = uint64(len(f.data))
	a.Blocks = (a.Size + 511) / 512
	a.Nlink = 1
	a.SetTimes(nil, &f.mtime, nil)
}

func (f *file) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	mu.Lock()
	defer mu.Unlock()
	f.fill(&out.Attr)
	return 0
}

func (f *file) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	mu.Lock()
	defer mu.Unlock()
	if sz, ok := in.GetSize(); ok {
		if int(sz) <= len(f.data) {
			f.data = f.data[:sz]
		} else {
			f.data = append(f.data, make([]byte, int(sz)-len(f.data))...)
		}
	}
	if mt, ok := in.GetMTime(); ok {
		f.mtime = mt
	}
	f.fill(&out.Attr)
	return 0
}

func (f *file) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	mu.Lock()
	defer mu.Unlock()
	if flags&syscall.O_TRUNC != 0 {
		f.data = nil
	}
	return nil, fuse.FOPEN_DIRECT_IO, 0
}

func (f *file) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	mu.Lock()
	defer mu.Unlock()
	if off >= int64(len(f.data)) {
		return fuse.ReadResultData(nil), 0
	}
	end := off + int64(len(dest))
	if end > int64(len(f.data)) {
		end = int64(len(f.data))
	}
	return fuse.ReadResultData(append([]byte(nil), f.data[off:end]...)), 0
}

func (f *file) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	mu.Lock()
	defer mu.Unlock()
	if end := off + int64(len(data)); end > int64(len(f.data)) {
		f.data = append(f.data, make([]byte, end-int64(len(f.data)))...)
	}
	copy(f.data[off:], data)
	f.mtime = time.Now()
	return uint32(len(data)), 0
}

// Fsync or fdatasync of a file: its bytes as they are now survive a cut.
func (f *file) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	mu.Lock()
	defer mu.Unlock()
	f.durable = append([]byte(nil), f.data...)
	return 0
}

// dump writes what survives: the durable entries of each directory, down from the root.
func dump(d *dir, to string) error {
	if err := os.MkdirAll(to, 0o755); err != nil {
		return err
	}
	for name, n := range d.durable {
		p := filepath.Join(to, name)
		switch x := n.(type) {
		case *dir:
			if err := dump(x, p); err != nil {
				return err
			}
		case *file:
			if err := os.WriteFile(p, x.durable, 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

// seed loads a directory tree as the starting state, all of it durable.
func seed(ctx context.Context, d *dir, from string) error {
	entries, err := os.ReadDir(from)
	if err != nil {
		return err
	}
	for _, e := range entries {
		p := filepath.Join(from, e.Name())
		var child fs.InodeEmbedder
		if e.IsDir() {
			sub := newDir()
			d.AddChild(e.Name(), d.NewPersistentInode(ctx, sub, fs.StableAttr{Mode: syscall.S_IFDIR}), false)
			if err := seed(ctx, sub, p); err != nil {
				return err
			}
			child = sub
		} else if e.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			f := &file{data: b, durable: append([]byte(nil), b...), mtime: time.Now()}
			d.AddChild(e.Name(), d.NewPersistentInode(ctx, f, fs.StableAttr{Mode: syscall.S_IFREG}), false)
			child = f
		} else {
			continue // sockets and the like do not survive a cut
		}
		d.durable[e.Name()] = child
	}
	return nil
}

// No sockets, fifos or devices here: what some network and FUSE volumes answer.
func (d *dir) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.ENOSYS
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: powercut-fs MOUNTPOINT DUMP [SEED]")
		os.Exit(2)
	}
	mnt, out := os.Args[1], os.Args[2]
	root := newDir()
	opts := &fs.Options{
		MountOptions: fuse.MountOptions{DirectMount: true, FsName: "powercut", Name: "powercut", AllowOther: true},
		OnAdd: func(ctx context.Context) {
			if len(os.Args) > 3 {
				mu.Lock()
				defer mu.Unlock()
				if err := seed(ctx, root, os.Args[3]); err != nil {
					fmt.Fprintln(os.Stderr, "seed:", err)
					os.Exit(1)
				}
			}
		},
	}
	zero := time.Duration(0)
	opts.EntryTimeout = &zero
	opts.AttrTimeout = &zero
	opts.NegativeTimeout = &zero
	server, err := fs.Mount(mnt, root, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mount:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGTERM)
	s := <-sig
	if s == syscall.SIGUSR1 {
		mu.Lock()
		err := dump(root, out)
		mu.Unlock()
		if err != nil {
			fmt.Fprintln(os.Stderr, "dump:", err)
			os.Exit(1)
		}
		fmt.Println("cut")
	}
	// Lazy: the killed program may still hold descriptors.
	_ = syscall.Unmount(mnt, syscall.MNT_DETACH)
	_ = server
	os.Exit(0)
}
