#!/bin/bash
# Coverage-guided fuzzing of the Swift parsers and decoders (Sources/voxfuzz) under libFuzzer
# and AddressSanitizer: builds .build/fuzz-swift/release/voxfuzz, seeds each target from real
# data (scripts/fuzz_seeds.py), then runs each target for RUNS executions on all cores. The
# growing corpus stays in .build/fuzz-swift/corpus/TARGET; a crash leaves its input in
# .build/fuzz-swift/ (minimise it with -minimize_crash=1 and commit it under
# Tests/Fuzz/corpus/swift/TARGET, which `make test` replays).
# usage: scripts/fuzz_swift.sh RUNS [TARGET...]   (default: every target)
set -euo pipefail
RUNS=${1:-10000000}; shift || true
SWIFT=${SWIFT:-swift}
B=.build/fuzz-swift
SWIFT_BACKTRACE=enable=no $SWIFT build -c release --product voxfuzz --build-path $B \
  -Xswiftc -sanitize=fuzzer,address -Xswiftc -DVOXFUZZ_LIBFUZZER -Xcc -fsanitize=fuzzer-no-link,address \
  -Xswiftc -Xclang-linker -Xswiftc -fuse-ld=lld
# the normal build: voxfuzz makes the record seeds, voxfs the stream seeds
SWIFT_BACKTRACE=enable=no $SWIFT build -c release
TARGETS=${*:-$(.build/release/voxfuzz --list)}
rm -rf $B/seeds && python3 scripts/fuzz_seeds.py .build/release/voxfuzz $B/seeds
J=$(nproc)
failed=""
echo "== $(date -u +%F\ %H:%M) $(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | xargs), $J cores: $RUNS executions per target" >> $B/summary.txt
for t in $TARGETS; do
  mkdir -p $B/corpus/$t
  extra=()
  [ -d Tests/Fuzz/corpus/swift/$t ] && extra=(Tests/Fuzz/corpus/swift/$t)
  echo "== $t: $RUNS executions on $J workers"
  start=$(date +%s)
  # one process per core, each RUNS/J executions, sharing the corpus folder
  pids=()
  for w in $(seq 1 $J); do
    (cd $B && exec env VOXFUZZ_TARGET=$t ASAN_OPTIONS=detect_leaks=0 ./release/voxfuzz -runs=$((RUNS / J)) -seed=$w -max_len=65536 \
       -timeout=10 -rss_limit_mb=2048 -artifact_prefix=./$t- -print_final_stats=1 corpus/$t seeds/$t "${extra[@]/#/../../}" \
       > fuzz-$t-$w.log 2>&1) &
    pids+=($!)
  done
  ok=1
  for p in "${pids[@]}"; do wait $p || ok=0; done
  execs=$(cat $B/fuzz-$t-*.log | awk '/stat::number_of_executed_units/ {s += $2} END {print s + 0}')
  if [ $ok = 0 ]; then
    echo "$t: FAILED after $execs executions (see $B/fuzz-$t-*.log and $B/$t-*)" | tee -a $B/summary.txt
    grep -h -A25 "ERROR\|Fatal\|deadly\|timeout" $B/fuzz-$t-*.log | head -60
    failed="$failed $t"
    continue
  fi
  echo "$t: $execs executions in $(( $(date +%s) - start )) s on $J workers: no crash, no timeout, no broken property; corpus $(ls $B/corpus/$t | wc -l) inputs" | tee -a $B/summary.txt
done
[ -z "${failed:-}" ] || { echo "fuzz_swift: failed:$failed"; exit 1; }
