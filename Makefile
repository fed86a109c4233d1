# VoxFS: `make demo` and `make test` work on a fresh Debian 12 machine (as root, or with sudo).
SHELL := /bin/bash
CACHE ?= $(or $(VOXFS_CACHE),$(HOME)/.cache/voxfs)
export VOXFS_CACHE := $(CACHE)
SWIFT ?= $(shell command -v swift 2>/dev/null || echo /opt/swift/usr/bin/swift)
PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian packages the build, the tests, the data fetch and the benchmarks need.
DEB_PACKAGES := pkg-config fuse3 libfuse3-dev libopenblas-dev liblmdb-dev libzstd-dev zlib1g-dev pigz pristine-tar \
                xz-utils zstd python3 python3-venv python3-pip ca-certificates \
                autoconf automake perl gcc make rsync tar attr dcmtk dcm2niix

# pjdfstest's runner (../shared/tools/pjdfstest.sh builds and runs the suite in ../shared/pjdfstest)
PJDFSTEST ?= $(firstword $(wildcard ../shared/tools/pjdfstest.sh /work/shared/tools/pjdfstest.sh))

# golden streams the reference decoder (written from docs/format.md alone) checks in `make test`
CONFORMANCE_STREAMS = ct.classical ct.fast ct.classical.v2 ct.classical-par.v2 ct.fast.v2 ct.fast-rows5.v2 mr.fast.v2 emri.default.v2 ct.classical.v3 mr.fast.v3 emri.default.v3 ct24.default-m2.v3 ct24.fast-m2.v3 ct24.default.v4 icbm8.classical.v4 icbm8.default-nofb.v4

.PHONY: conformance all deps build data test pjdfstest demo install uninstall bench-codec bench-pack bench-mount compare fuzz fuzz-archive fuzz-long fuzz-slab fuzz-swift soak model experiments clean help

all: build

help:
	@echo "make demo         install what is missing, build, fetch a real CT scan, compress it and show the result"
	@echo "make test         install what is missing, build, fetch the real test data, run every test"
	@echo "make pjdfstest    the POSIX filesystem test suite on a read-write mount (Tests/pjdfstest/known-failures.txt: what does not apply)"
	@echo "make conformance  the reference decoder (docs/format.md alone, Python) on golden v1 to v4 streams"
	@echo "make bench-codec  bpp and speed of every preset on the real volumes, beside xz -9 and zstd -19"
	@echo "make bench-pack   pack/unpack throughput and ratio of the real data tree, beside tar | zstd -19 and tar | xz -9"
	@echo "make bench-mount  reads through voxfs mount (cold, warm, first byte, random 4 KiB, header scan) beside the originals and squashfuse"
	@echo "make install      voxfs, the mount helper (mount -t fuse.voxfs, fstab) and the systemd unit (PREFIX=/usr/local)"
	@echo "make compare      VoxFS against JPEG-LS, JPEG 2000, HTJ2K, JPEG XL, HEVC, FFV1, xz, zstd -> docs/benchmarks-compare.md"
	@echo "make fuzz-archive damaged-archive corpus: FUZZ_ARCHIVE_CASES mutations of the seed archive through verify, unpack and the mount"
	@echo "make fuzz-long    libFuzzer, FUZZ_RUNS executions (10000000) of each target: fuzz-slab, then fuzz-swift"
	@echo "make fuzz-slab    libFuzzer on the C slab coder under ASan/UBSan"
	@echo "make fuzz-swift   libFuzzer on the Swift parsers and decoders under ASan (FUZZ_TARGETS=\"dicom stream ...\"; all: .build/release/voxfuzz --list)"
	@echo "make soak         32 readers through the mount for SOAK_SECONDS per cache size, bytes checked, peak memory"
	@echo "make fuzz         long fuzz runs of the .vxz decoder and the format parsers (FUZZ_ITERATIONS=...)"
	@echo "make model        retrain the shipped models (models/*.vxm) from the real volumes and embed them"
	@echo "make experiments  the paper's comparisons (neighbourhoods, epochs, cross-modality) -> docs/experiments.md"

# Installs missing Debian packages (apt-get update once, only when something is missing).
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

build: deps
	$(SWIFT) build -c release

data: deps
	scripts/fetch_data.sh

# The damaged-archive corpus: deterministic mutations of the committed seed archive through
# verify, unpack and the mount (every 10th); each must be a clean error or exact bytes.
FUZZ_ARCHIVE_SEED ?= Tests/Fixtures/archives/seed-v2.voxfs
FUZZ_ARCHIVE_CASES ?= 1000

# Tests run in release mode: the codec's inner loops are C and Swift at -O0 would make the
# real-data round trips slow. VOXFS_REQUIRE_DATA makes missing data a failure, not a skip.
test: deps data
	VOXFS_REQUIRE_DATA=1 $(SWIFT) build -c release --build-tests
	set -o pipefail; VOXFS_REQUIRE_DATA=1 $(SWIFT) test -c release --skip-build --disable-swift-testing 2>&1 | tee .build/test.log
	scripts/compare_setup.sh
	set -o pipefail; VOXFS_REQUIRE_DATA=1 $(CACHE)/venv/bin/python scripts/compare_codecs.py --selftest --voxfs .build/release/voxfs \
	  --cache "$(CACHE)" 2>&1 | tee .build/compare-selftest.log
	set -o pipefail; $(PYTHON) scripts/fuzz_archive.py $(FUZZ_ARCHIVE_SEED) .build/fuzz-archive $(FUZZ_ARCHIVE_CASES) 10 \
	  --voxfs .build/release/voxfs 2>&1 | tee .build/fuzz-archive.log
	set -o pipefail; $(PYTHON) scripts/fuzz_archive.py Tests/Fixtures/archives/seed-v3.voxfs .build/fuzz-archive-v3 200 10 \
	  --voxfs .build/release/voxfs 2>&1 | tee .build/fuzz-archive-v3.log
	set -o pipefail; $(PYTHON) scripts/reference_decoder.py --golden Tests/VoxCodecTests/golden $(CONFORMANCE_STREAMS) 2>&1 | tee .build/conformance.log
	rm -rf .build/fuzz-seeds && $(PYTHON) scripts/fuzz_seeds.py .build/release/voxfuzz .build/fuzz-seeds
	set -o pipefail; targets=$$(.build/release/voxfuzz --list) && [ -n "$$targets" ] && for t in $$targets; do \
	  .build/release/voxfuzz $$t .build/fuzz-seeds/$$t $$([ -d Tests/Fuzz/corpus/swift/$$t ] && echo Tests/Fuzz/corpus/swift/$$t) || exit 1; \
	done 2>&1 | tee .build/fuzz-replay.log
	$(MAKE) --no-print-directory pjdfstest
	@awk '/Executed [0-9]+ tests?, with [0-9]+ failures?/ { n = $$2; f = $$5 } \
	  /[0-9]+ checks ok, [0-9]+ failed/ { for (i = 1; i <= NF; i++) { if ($$(i+1) == "checks" && $$(i+2) == "ok,") c += $$i; if ($$(i+1) == "failed" || $$(i+1) == "failed,") cf += $$i } } \
	  END { if (n == "") exit 1; printf "%d passed, %d failed\n", n - f + c, f + cf }' .build/test.log .build/compare-selftest.log .build/fuzz-archive.log .build/fuzz-archive-v3.log .build/conformance.log \
	  .build/fuzz-replay.log .build/pjdfstest.log

# The POSIX filesystem test suite on `voxfs mount -o rw` (about 3 minutes); part of `make test`.
pjdfstest: build
	@if [ -z "$(PJDFSTEST)" ]; then echo "pjdfstest: the suite's runner is not here (PJDFSTEST=.../tools/pjdfstest.sh); not run" | tee .build/pjdfstest.log; \
	else set -o pipefail; $(PYTHON) scripts/pjdfstest_rw.py --voxfs .build/release/voxfs --suite "$(PJDFSTEST)" \
	  --log .build/pjdfstest-prove.log 2>&1 | tee .build/pjdfstest.log; fi

demo: build data
	@scripts/demo.sh .build/release/voxfs "$(CACHE)"

# the venv of scripts/compare_setup.sh adds JPEG XL and JPEG-LS rows; BENCH_FLAGS=--threads=1 etc.
bench-codec: build data
	$(if $(wildcard $(CACHE)/venv/bin/python),$(CACHE)/venv/bin/python,$(PYTHON)) scripts/bench_codec.py \
	  --voxfs .build/release/voxfs --cache "$(CACHE)" $(BENCH_FLAGS)

bench-pack: build data
	$(PYTHON) scripts/bench_pack.py --voxfs .build/release/voxfs --cache "$(CACHE)" --out .build/bench-pack.md

# squashfs-tools and squashfuse are only needed for this comparison
bench-mount: build data
	$(MAKE) --no-print-directory deps DEB_PACKAGES="squashfs-tools squashfuse"
	$(CACHE)/venv/bin/python scripts/bench_mount.py --voxfs .build/release/voxfs --cache "$(CACHE)" --out .build/bench-mount.md

compare: build data
	scripts/compare_setup.sh
	scripts/train_fold_models.sh .build/release/voxfs
	$(CACHE)/venv/bin/python scripts/compare_codecs.py --voxfs .build/release/voxfs --cache "$(CACHE)" --runs 3 \
	  --out docs/benchmarks-compare.md --json .build/compare.json

# Coverage-guided fuzzing of the C slab coder under ASan and UBSan (libFuzzer, the Swift
# toolchain's clang): FUZZ_RUNS executions, seeded by the committed Tests/Fuzz/corpus/slab; new
# inputs go to .build/fuzz/corpus, crashes to .build/fuzz/ (minimise them into the committed corpus).
FUZZ_RUNS ?= 10000000
CLANG ?= $(or $(shell command -v clang 2>/dev/null),/opt/swift/usr/bin/clang)
fuzz-long: fuzz-slab fuzz-swift

fuzz-slab:
	mkdir -p .build/fuzz/corpus
	$(CLANG) -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -D_GNU_SOURCE \
	  -I Sources/CVoxKernels/include Sources/CVoxKernels/*.c Tests/Fuzz/fuzz_slab.c -o .build/fuzz/slab
	cd .build/fuzz && ./slab -runs=$(FUZZ_RUNS) -max_len=4096 -jobs=$$(nproc) -workers=$$(nproc) -artifact_prefix=./ corpus ../../Tests/Fuzz/corpus/slab

# The Swift targets (Sources/voxfuzz: DICOM, NIfTI, MetaImage, NRRD, gzip, series grouping, .vxz
# streams, model files, archive records) under libFuzzer and ASan, seeded from real data, each for
# FUZZ_RUNS executions on every core; `make test` replays the seeds and Tests/Fuzz/corpus/swift.
FUZZ_TARGETS ?=
fuzz-swift: deps data
	SWIFT=$(SWIFT) scripts/fuzz_swift.sh $(FUZZ_RUNS) $(FUZZ_TARGETS)

# SOAK_SECONDS per cache size: 32 readers through the mount, every byte checked, peak memory
SOAK_SECONDS ?= 600
soak: build data
	$(PYTHON) scripts/soak_mount.py --voxfs .build/release/voxfs --cache "$(CACHE)" --seconds $(SOAK_SECONDS) --out .build/soak.md

conformance:
	$(PYTHON) scripts/reference_decoder.py --golden Tests/VoxCodecTests/golden $(CONFORMANCE_STREAMS)

fuzz-archive: build
	$(PYTHON) scripts/fuzz_archive.py $(FUZZ_ARCHIVE_SEED) .build/fuzz-archive $(FUZZ_ARCHIVE_CASES) 10 --voxfs .build/release/voxfs

fuzz: build data
	scripts/fuzz_decoder.sh .build/release/voxfs $${FUZZ_ITERATIONS:-20000}
	$(PYTHON) scripts/fuzz_formats.py .build/release/voxfs $${FUZZ_ITERATIONS:-20000}

model: build data
	scripts/train_models.sh .build/release/voxfs
	$(SWIFT) build -c release

# EXPERIMENTS_FLAGS=--quick for the shorter run the committed docs used
experiments: build data
	$(CACHE)/venv/bin/python -c "import matplotlib" 2>/dev/null || $(CACHE)/venv/bin/pip install -q matplotlib
	$(CACHE)/venv/bin/python scripts/experiments.py --voxfs .build/release/voxfs --cache "$(CACHE)" $(EXPERIMENTS_FLAGS)

# voxfs, the mount(8) helper (mount -t fuse.voxfs, fstab) and the systemd unit template
PREFIX ?= /usr/local
install: build
	install -D -m 755 .build/release/voxfs $(DESTDIR)$(PREFIX)/bin/voxfs
	install -D -m 755 systemd/mount.fuse.voxfs $(DESTDIR)/sbin/mount.fuse.voxfs
	install -D -m 644 systemd/voxfs@.service $(DESTDIR)/etc/systemd/system/voxfs@.service
	@echo "installed: $(DESTDIR)$(PREFIX)/bin/voxfs, $(DESTDIR)/sbin/mount.fuse.voxfs, $(DESTDIR)/etc/systemd/system/voxfs@.service"

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/voxfs $(DESTDIR)/sbin/mount.fuse.voxfs $(DESTDIR)/etc/systemd/system/voxfs@.service

clean:
	rm -rf .build
