#!/usr/bin/env bash
# Builds tollgate's libFuzzer targets and runs each for a bounded time, starting from
# the seed corpus kept in fuzz/corpus/<target>. New inputs go to a scratch corpus under
# fuzz/target/, so the repository stays clean; a crash stops the run (non-zero exit)
# with its input in fuzz/artifacts/<target>/.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]      (default: 60 s, every target)
#
# cargo-fuzz passes nightly-only flags (-Zsanitizer=address and friends). This machine
# has only stable Rust, so RUSTC_BOOTSTRAP=1 lets the stable compiler accept them.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(sse usage prompt_tokens config)
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --version 0.13.2 --locked
fi
export RUSTC_BOOTSTRAP=1
# AddressSanitizer by default. tollgate forbids unsafe code, so ASan mostly re-checks
# what the compiler proved; CI passes FUZZ_SANITIZER=none to save its build time and
# keeps the coverage-guided search, the panics and the debug assertions.
sanitizer="${FUZZ_SANITIZER:-address}"
build_started=$(date +%s)
# Release, with debug assertions and overflow checks from fuzz/Cargo.toml's profile.
cargo fuzz build -O -s "$sanitizer"
echo "fuzz build: $(( $(date +%s) - build_started )) s"
for target in "${targets[@]}"; do
  scratch="target/corpus/$target"
  mkdir -p "$scratch" "artifacts/$target"
  log="target/fuzz-$target.log"
  # -timeout: one input taking 10 s is a hang (or quadratic) worth failing on.
  if ! cargo fuzz run -O -s "$sanitizer" "$target" "$scratch" "corpus/$target" -- \
      -max_total_time="$seconds" -timeout=10 -max_len=65536 -print_final_stats=1 \
      >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz target $target FAILED; the input is in fuzz/artifacts/$target/"
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  echo "fuzz $target: $runs executions in $seconds s, no crash"
done
