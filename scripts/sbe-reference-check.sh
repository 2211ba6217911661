#!/usr/bin/env bash
# Runs sbe-codegen over the test and sample schemas of the reference SBE implementation
# (real-logic/simple-binary-encoding) and reports, per schema, whether it is accepted or
# rejected as the reference does, and whether the accepted ones' generated code passes
# `cargo clippy -D warnings` and round-trips every message (encode, decode, compare every field).
#
# Not part of CI (it needs a copy of the reference repository). Usage:
#
#   scripts/sbe-reference-check.sh REFERENCE [WORK_DIR]
#
# REFERENCE is a checkout of the reference repository, or its bare git directory (the schemas
# are then extracted from HEAD into WORK_DIR). WORK_DIR (default: a new temporary directory)
# receives the extracted schemas, the generated crates and the report `report.txt`. Nothing
# is written into this repository. Respects CARGO_TARGET_DIR for building the generator; the
# generated crates build in WORK_DIR/target.
#
# Exit status: 0 when every schema behaves as the reference does, 1 otherwise.
set -euo pipefail

if [[ $# -lt 1 ]]; then
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
reference=$1
work=${2:-$(mktemp -d -t sbe-reference.XXXXXX)}
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$work"
work=$(cd "$work" && pwd)

# Where the reference keeps test and sample schemas.
dirs=(sbe-tool/src/test/resources sbe-samples/src/main/resources sbe-benchmarks/src/main/resources gocode/resources)

if [[ -d $reference/objects && -f $reference/HEAD ]]; then
    rm -rf "$work/reference"
    mkdir -p "$work/reference"
    existing=()
    for d in "${dirs[@]}"; do
        if git --git-dir="$reference" cat-file -e "HEAD:$d" 2>/dev/null; then existing+=("$d"); fi
    done
    git --git-dir="$reference" archive HEAD "${existing[@]}" | tar -x -C "$work/reference"
    root=$work/reference
else
    root=$(cd "$reference" && pwd)
fi

# The schemas the reference's own tests expect it to refuse (errors, or warnings made fatal):
# ErrorHandlerTest, EnumTypeTest, SinceVersionValidationTest, CyclicReferencesTest,
# Issue567GroupSizeTest.
rejected_by_reference() {
    case $(basename "$1") in
        error-handler-*.xml | cyclic-refs-schema.xml | issue567-invalid.xml) return 0 ;;
        *) return 1 ;;
    esac
}

schemas=()
for d in "${dirs[@]}"; do
    [[ -d $root/$d ]] || continue
    while IFS= read -r f; do
        # Included fragments (a <types> root) are not schemas of their own.
        if grep -q "messageSchema" "$f"; then schemas+=("$f"); fi
    done < <(find "$root/$d" -name '*.xml' | sort)
done
echo "${#schemas[@]} schemas under $root"

out=$work/generated
rm -rf "$out"
mkdir -p "$out"
(cd "$repo" && cargo run --quiet -p sbe-codegen --example sbe_reference -- "$out" "${schemas[@]}") \
    > "$work/generator.txt"

report=$work/report.txt
: > "$report"
failures=0
while IFS= read -r line; do
    case $line in
        "accept "*)
            read -r _ path crate <<< "$line"
            name=${path#"$root/"}
            if rejected_by_reference "$path"; then
                echo "FAIL  $name: accepted, the reference rejects it" >> "$report"
                failures=$((failures + 1))
                continue
            fi
            if ! (cd "$out" && CARGO_TARGET_DIR=$out/target cargo clippy --quiet -p "$crate" --lib -- -D warnings) \
                > "$work/$crate.clippy.txt" 2>&1; then
                echo "FAIL  $name: generated code does not pass clippy -D warnings ($work/$crate.clippy.txt)" >> "$report"
                failures=$((failures + 1))
            elif ! (cd "$out" && CARGO_TARGET_DIR=$out/target cargo test --quiet -p "$crate") \
                > "$work/$crate.test.txt" 2>&1; then
                echo "FAIL  $name: round trip fails ($work/$crate.test.txt)" >> "$report"
                failures=$((failures + 1))
            else
                tests=$(grep -o '[0-9]* passed' "$work/$crate.test.txt" | head -1)
                echo "ok    $name: accepted, clean, round-trips (${tests:-0 passed})" >> "$report"
            fi
            ;;
        "reject "*)
            rest=${line#reject }
            path=${rest%%: *}
            name=${path#"$root/"}
            message=${rest#*: }
            if rejected_by_reference "$path" && [[ $message =~ \.xml:[0-9]+:\  ]]; then
                echo "ok    $name: rejected: ${message#"$root/"}" >> "$report"
            elif rejected_by_reference "$path"; then
                echo "FAIL  $name: rejected without a file and line: $message" >> "$report"
                failures=$((failures + 1))
            else
                echo "FAIL  $name: rejected, the reference accepts it: ${message#"$root/"}" >> "$report"
                failures=$((failures + 1))
            fi
            ;;
        *) echo "      $line" >> "$report" ;;
    esac
done < "$work/generator.txt"

cat "$report"
echo "$(grep -c '^ok' "$report" || true) ok, $failures failing; report in $report"
[[ $failures -eq 0 ]]
