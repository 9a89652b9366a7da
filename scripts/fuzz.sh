#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser of outside input (fuzz/, docs/security.md "Fuzzing").
#
#   scripts/fuzz.sh [SECONDS] [--merge] [TARGET…]
#
# Builds every target with cargo fuzz (libFuzzer, AddressSanitizer, debug assertions and
# overflow checks on), then runs each — or only the TARGETs named — for SECONDS (default 60),
# starting from the committed corpus fuzz/corpus/<target>/. Fails on the first crash, panic,
# overflow, leak, timeout (10 s for one input) or out-of-memory (2 GiB), saying which target
# and which input, and how to reproduce it.
#
# New inputs go to a scratch corpus (under fuzz/target/, gone with it): the committed corpus is
# only read. With --merge, the inputs that reach new code are added to fuzz/corpus/<target>/
# (libFuzzer's -merge=1), to commit on purpose.
#
# cargo fuzz needs nightly compiler flags (-Zsanitizer, sanitizer coverage); with the stable
# toolchain RUSTC_BOOTSTRAP=1 lets them through. FUZZ_SANITIZER=none builds without ASan.
# cargo-fuzz is installed (`cargo install cargo-fuzz --locked`) when missing.
set -euo pipefail
here=${BASH_SOURCE[0]}
[[ $here == */* ]] || here=./$here
cd "${here%/*}/.."

seconds=60
merge=false
targets=()
for arg in "$@"; do
  case $arg in
    --merge) merge=true ;;
    -h | --help)
      sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *[!0-9]*) targets+=("$arg") ;;
    *) seconds=$arg ;;
  esac
done

export RUSTC_BOOTSTRAP=1 CARGO_INCREMENTAL=0
sanitizer=${FUZZ_SANITIZER:-address}

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

cd fuzz
if ((${#targets[@]} == 0)); then
  mapfile -t targets < <(cargo fuzz list)
fi

build=(-O --debug-assertions --sanitizer "$sanitizer")
echo "== building ${#targets[@]} fuzz targets (sanitizer: $sanitizer)"
started=$SECONDS
cargo fuzz build "${build[@]}"
echo "   built in $((SECONDS - started)) s"

work=target/fuzz-run
status=0
for target in "${targets[@]}"; do
  scratch=$work/corpus/$target
  artifacts=$work/artifacts/$target
  rm -rf "$scratch" "$artifacts"
  mkdir -p "$scratch" "$artifacts" "corpus/$target"
  log=$work/$target.log
  echo "== $target: ${seconds} s"
  if ! cargo fuzz run "${build[@]}" "$target" "$scratch" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" >"$log" 2>&1; then
    status=1
    grep -E "^(==[0-9]+==ERROR|thread '.*' panicked|SUMMARY)" "$log" | head -5 || true
    tail -n 40 "$log"
    for input in "$artifacts"/*; do
      [[ -e $input ]] || continue
      echo "!! $target failed on fuzz/$input"
      echo "   reproduce: (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run ${build[*]} $target $input)"
    done
    echo "!! full output: fuzz/$log"
    break
  fi
  grep -E "^stat::number_of_executed_units|^Done [0-9]+ runs" "$log" | tail -n 1 | sed 's/^/   /' || true
  if $merge; then
    cargo fuzz run "${build[@]}" "$target" "corpus/$target" "$scratch" -- -merge=1 \
      >"$work/$target.merge.log" 2>&1
    echo "   merged: $(find "corpus/$target" -type f | wc -l) inputs in fuzz/corpus/$target"
  fi
done
exit $status
