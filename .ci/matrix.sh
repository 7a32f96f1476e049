#!/usr/bin/env bash
# The AG2 version matrix and the install checks of issue #16, each in a virtual environment of its own:
#
#   ag2==0.10.* and ag2==0.12.* installed first (a machine that already runs AG2 Classic), then the
#   library with the documented extra [ag2]: pip check clean, no file claimed by two distributions,
#   the same ag2 still there, the example chat works, and the feature and policy tests pass;
#   autogen (a fresh machine's choice) with [autogen,openai]: the same install checks and the example;
#   ag2 1.x (no GroupChat) installed first, then [autogen]: AG2 Classic beside it, no file shared;
#   no AG2 at all: the library and its command line still import, and the feature names both extras;
#   the check itself: autogen pip-installed on top of ag2 0.10 (the damage of issue #16) is reported;
#   the sdist: built, listed, and its own tests run from the unpacked tree.
#
# Called by .ci/run after the main suite; run it alone with `bash .ci/matrix.sh` (uses .venv for the
# sdist build). MATRIX_ONLY="ag2-0.10" runs one cell. Every cell prints one "matrix:" line.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$(mktemp -d "${TMPDIR:-/tmp}/persistency-matrix.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
FEATURE_TESTS=$(ls tests/test_feature_*.py tests/test_policies*.py tests/test_pattern*.py 2>/dev/null || true)
passed=0
failed=0

note() { echo "matrix: $*"; }

make_venv() {  # make_venv NAME -> prints the venv's bin dir
    python3 -m venv "$WORK/$1"
    "$WORK/$1/bin/python" -m pip install -q -U pip >/dev/null
    echo "$WORK/$1/bin"
}

example() {  # example BIN: the README's example chat (crash, resume, second turn, rebuild), offline
    local out
    out=$(mkdir -p "$WORK/run-$$" && cd "$WORK/run-$$" && env -u OPENAI_API_KEY -u PERSISTENCY_URL \
        "$1/python" "$ROOT/examples/mathchat_with_checkpoints.py" 2>&1) || { echo "$out" | tail -20; return 1; }
    grep -q "run run-000001 ended: termination_message" <<<"$out" || { echo "$out" | tail -20; return 1; }
    rm -rf "$WORK/run-$$"
}

cell_existing_ag2() {  # cell_existing_ag2 SPEC (e.g. 'ag2==0.10.*')
    local name bin version
    name="ag2-${1#ag2==}"; name=${name%.\*}
    bin=$(make_venv "$name")
    "$bin/pip" install -q "$1"
    version=$("$bin/python" -c "from importlib.metadata import version; print(version('ag2'))")
    "$bin/pip" install -q -e "$ROOT[ag2,test-base]"  # editable: the tests run from ROOT, whose persistency/ has no providers/
    "$bin/pip" check
    "$bin/python" .ci/check_install.py --expect "ag2==$version" --absent autogen --autogen-version "$version"
    example "$bin"
    # shellcheck disable=SC2086
    (cd "$ROOT" && "$bin/python" -m pytest -q -p no:cacheprovider -x $FEATURE_TESTS | tail -n 3)
    note "$name: ag2 $version kept, pip check clean, no shared files, example and feature tests pass"
}

cell_autogen() {  # the README's first command: [autogen,openai] on a fresh machine
    local bin version out
    bin=$(make_venv autogen)
    "$bin/pip" install -q "$ROOT[autogen,openai]"
    version=$("$bin/python" -c "from importlib.metadata import version; print(version('autogen'))")
    "$bin/pip" check
    "$bin/python" .ci/check_install.py --expect "autogen==$version" --absent ag2 --autogen-version "$version"
    example "$bin"
    # with OPENAI_API_KEY exported the example must get past its client check (exit 2 = openai missing);
    # the base URL is a closed loopback port, so the model call itself fails at once, offline
    set +e
    out=$(cd "$WORK" && OPENAI_API_KEY=sk-not-a-key OPENAI_BASE_URL=http://127.0.0.1:9/v1 timeout 120 \
        "$bin/python" "$ROOT/examples/mathchat_with_checkpoints.py" --store "$WORK/openai-store" 2>&1)
    code=$?
    set -e
    if [ "$code" -eq 2 ] || grep -q "not installed" <<<"$out" || ! grep -q "Model: OpenAI" <<<"$out"; then
        echo "$out" | tail -20; return 1
    fi
    note "autogen: autogen $version + openai $("$bin/python" -c 'import openai; print(openai.__version__)'), pip check clean, no shared files, example runs (and with OPENAI_API_KEY gets to the model call)"
}

cell_ag2_one() {  # ag2 1.x (no GroupChat) stays; [autogen] adds AG2 Classic beside it, sharing no file
    local bin version
    bin=$(make_venv ag2-1)
    "$bin/pip" install -q 'ag2>=1,<2'
    version=$("$bin/python" -c "from importlib.metadata import version; print(version('ag2'))")
    "$bin/pip" install -q "$ROOT[autogen]"
    "$bin/pip" check
    "$bin/python" .ci/check_install.py --expect "ag2==$version"
    example "$bin"
    note "ag2-1: ag2 $version kept, autogen beside it, pip check clean, no shared files, example runs"
}

cell_no_ag2() {
    local bin
    bin=$(make_venv no-ag2)
    "$bin/pip" install -q "$ROOT"
    "$bin/pip" check
    "$bin/python" .ci/check_install.py --absent ag2 --absent autogen --no-ag2
    "$bin/persistency" --version | grep -q "none installed"
    note "no-ag2: the library and the CLI import without AG2 (see above for the feature's message)"
}

cell_damage() {  # the check itself can fail: autogen pip-installed on top of ag2 0.x is caught
    local bin out
    bin=$(make_venv damage)
    "$bin/pip" install -q 'ag2==0.10.*'
    "$bin/pip" install -q 'autogen>=0.14.1,<0.15' "$ROOT"
    if out=$("$bin/python" .ci/check_install.py --absent autogen 2>&1); then
        echo "check_install.py passed a damaged install: $out"; return 1
    fi
    grep -q "claimed by two distributions" <<<"$out" || { echo "$out"; return 1; }
    note "damage: autogen on top of ag2 0.10 is caught ($(grep -o '[0-9]* file(s) claimed by two' <<<"$out"))"
}

cell_sdist() {
    local sdist tree
    "$ROOT/.venv/bin/python" -m build --sdist -o "$WORK/dist" "$ROOT" >"$WORK/build.log" 2>&1 \
        || { tail -20 "$WORK/build.log"; return 1; }
    if grep -qi "deprecat\|license classifiers" "$WORK/build.log"; then
        grep -i "deprecat\|license classifiers" "$WORK/build.log"; return 1
    fi
    sdist=$(ls "$WORK"/dist/*.tar.gz)
    tar tzf "$sdist" >"$WORK/sdist.txt"
    for f in LICENSE CHANGELOG.md tests/conftest.py tests/helpers_ag2.py tests/servers/redis_server.py \
             tests/servers/s3_server.py examples/mathchat_with_checkpoints.py; do
        grep -q "/$f\$" "$WORK/sdist.txt" || { echo "sdist lacks $f"; return 1; }
    done
    tar xzf "$sdist" -C "$WORK/dist"
    tree=$(ls -d "$WORK"/dist/ag2_persistency-*/)
    (cd "$tree" && "$ROOT/.venv/bin/python" -m pytest -q -p no:cacheprovider -x tests/test_cli.py tests/test_example.py \
        | tail -n 1)
    note "sdist: $(wc -l <"$WORK/sdist.txt") files (LICENSE, CHANGELOG, conftest, helpers, servers); its tests pass"
}

run_cell() {
    if [ -n "${MATRIX_ONLY:-}" ] && [ "$MATRIX_ONLY" != "$1" ]; then return 0; fi
    local start=$SECONDS
    ( "${@:2}" ) &  # a subshell of its own, not an `if` condition, so `set -e` stops it at its first failure
    if wait $!; then
        passed=$((passed + 1)); note "$1 took $((SECONDS - start)) s"
    else
        failed=$((failed + 1)); note "$1 FAILED after $((SECONDS - start)) s"
    fi
}

run_cell ag2-0.10 cell_existing_ag2 'ag2==0.10.*'
run_cell ag2-0.12 cell_existing_ag2 'ag2==0.12.*'
run_cell autogen cell_autogen
run_cell ag2-1 cell_ag2_one
run_cell no-ag2 cell_no_ag2
run_cell damage cell_damage
run_cell sdist cell_sdist
echo "matrix: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
