#!/usr/bin/env bash
# Fuzzes the parsers that take hostile input (fuzz/README.md): builds every cargo-fuzz target
# once, runs each for the given time, and fails if any of them finds a crash, a panic or a hang.
#
#   scripts/fuzz.sh [seconds-per-target]        (default 30)
#
# Environment:
#   FUZZ_TARGETS     targets to run, space-separated (default: all of fuzz/fuzz_targets/)
#   FUZZ_SANITIZER   none (default) or address: the code under test is safe Rust, where a
#                    sanitizer finds little and costs build time and executions
#   FUZZ_TARGET_DIR  where to build (default fuzz/target); point it outside the checkout to keep
#                    the instrumented build warm across fresh clones
#
# The fuzzer adds the inputs it finds to $FUZZ_TARGET_DIR/corpus/<target>/, not to the committed
# seeds in fuzz/corpus/<target>/. A crash is saved in fuzz/artifacts/<target>/; replay it with
#   cargo fuzz run -O -s none <target> fuzz/artifacts/<target>/<file>
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-30}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: scripts/fuzz.sh [seconds-per-target]" >&2
  exit 2
fi
sanitizer="${FUZZ_SANITIZER:-none}"
target_dir="${FUZZ_TARGET_DIR:-$PWD/fuzz/target}"
if [[ -n "${FUZZ_TARGETS:-}" ]]; then
  read -r -a targets <<<"$FUZZ_TARGETS"
else
  targets=()
  for f in fuzz/fuzz_targets/*.rs; do targets+=("$(basename "$f" .rs)"); done
fi

if [[ "$sanitizer" != none ]]; then
  # cargo fuzz passes -Zsanitizer=...; this lets the stable toolchain accept it. Without a
  # sanitizer cargo fuzz uses only stable flags (-Cpasses=sancov-module, -Cllvm-args=...).
  export RUSTC_BOOTSTRAP=1
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

triple="$(rustc -vV | sed -n 's/^host: //p')"
# -O: optimised (see the profile in fuzz/Cargo.toml), with debug assertions and overflow checks.
flags=(-O -s "$sanitizer" --target "$triple" --target-dir "$target_dir")

start=$SECONDS
echo "fuzz: building ${targets[*]} (sanitizer: $sanitizer, target dir: $target_dir)"
if [[ ${#targets[@]} -eq 1 ]]; then
  cargo fuzz build "${flags[@]}" "${targets[0]}"
else
  cargo fuzz build "${flags[@]}"
fi
echo "fuzz: built in $((SECONDS - start)) s"

passed=0
failed=()
for t in "${targets[@]}"; do
  # The binaries just built, run directly: sources edited meanwhile do not trigger a rebuild.
  bin="$target_dir/$triple/release/$t"
  corpus="$target_dir/corpus/$t"
  log="$target_dir/logs/$t.log"
  mkdir -p "$corpus" "$(dirname "$log")" "fuzz/artifacts/$t"
  # libFuzzer keeps every input that reached new coverage; past 20,000 files, keep only
  # a set that covers the same, so that a warm corpus does not grow without end.
  if [[ $(find "$corpus" -type f | wc -l) -gt 20000 ]]; then
    rm -rf "$corpus.min" && mkdir "$corpus.min"
    if "$bin" -merge=1 "$corpus.min" "$corpus" >"$log" 2>&1; then
      rm -rf "$corpus" && mv "$corpus.min" "$corpus"
    else
      rm -rf "$corpus.min"
    fi
  fi
  seeds=() dict=()
  [[ -d "fuzz/corpus/$t" ]] && seeds=("fuzz/corpus/$t")
  [[ -f "fuzz/dict/$t.dict" ]] && dict=("-dict=fuzz/dict/$t.dict")
  t0=$SECONDS
  # The first corpus directory receives new inputs; the committed seeds are only read.
  # -timeout: an input that takes seconds is a denial of service, and fails the run.
  if "$bin" -artifact_prefix="fuzz/artifacts/$t/" -max_total_time="$seconds" -timeout=5 \
    -rss_limit_mb=2048 -print_final_stats=1 "${dict[@]}" "$corpus" "${seeds[@]}" \
    >"$log" 2>&1; then
    passed=$((passed + 1))
    status=ok
  else
    failed+=("$t")
    status=FAILED
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -n 1 || true)
  echo "fuzz: $t $status in $((SECONDS - t0)) s: ${runs:-?} runs, ${rate:-?} exec/s, ${cov:-cov: ?}," \
    "corpus $(find "$corpus" -type f | wc -l) files"
  if [[ $status == FAILED ]]; then
    echo "---- last lines of $log"
    tail -n 60 "$log"
    echo "----"
  fi
done

echo "fuzz: total $((SECONDS - start)) s"
echo "fuzz: $passed passed, ${#failed[@]} failed"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz: crashes in ${failed[*]}: see fuzz/artifacts/" >&2
  exit 1
fi
