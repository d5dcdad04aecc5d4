#!/usr/bin/env bash
# Going Deeper: one entry point for students, instructors and CI.
#
#   bash course.sh lab            set up (first time) and open the series in JupyterLab
#   bash course.sh test [ARGS]    set up (first time) and run every test (ARGS go to pytest)
#   bash course.sh release        regenerate notebooks/ from solutions/
#   bash course.sh strip          strip outputs and widget state from committed notebooks
#   bash course.sh check          fail if notebooks/ is stale or a notebook carries outputs
#   bash course.sh execute        run the solved series into build/solved/ (notebooks + HTML)
#   bash course.sh nbgrader ARGS  run nbgrader with the course configuration (autograder/)
#   bash course.sh grade A|all    grade submissions: parallel, sandboxed, tamper-resistant, with a report
#   bash course.sh setup          only create or update the virtual environment
#
# The virtual environment lives in .venv/ (override with GOINGDEEPER_VENV) and is
# reused; it is reinstalled only when requirements.txt or pyproject.toml change.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${GOINGDEEPER_VENV:-$ROOT/.venv}"
STAMP="$VENV/.goingdeeper-installed"

die() { echo "course.sh: $*" >&2; exit 1; }

find_python() {
  local candidate
  for candidate in "${PYTHON:-}" python3.11 python3 python; do
    [[ -n "$candidate" ]] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  return 1
}

setup() {
  local want
  want="$(cat "$ROOT/requirements.txt" "$ROOT/pyproject.toml" | cksum)"
  if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    return 0
  fi
  if [[ ! -x "$VENV/bin/python" ]]; then
    local py
    py="$(find_python)" || die "Python 3.11 is needed (the course pins torch==2.13.0 for it). Install it, or point PYTHON=/path/to/python3.11 at one."
    echo "course.sh: creating the virtual environment $VENV with $py"
    "$py" -m venv "$VENV" || die "could not create $VENV (on Debian/Ubuntu: apt install python3.11-venv)"
  fi
  echo "course.sh: installing the pinned packages into $VENV (first run takes a few minutes)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -r "$ROOT/requirements.txt"
  "$VENV/bin/python" -m pip install --quiet --no-deps -e "$ROOT"
  echo "$want" > "$STAMP"
}

activate() {
  export PATH="$VENV/bin:$PATH"            # nbgrader shells out to alembic
  export JUPYTER_CONFIG_PATH="$ROOT/autograder${JUPYTER_CONFIG_PATH:+:$JUPYTER_CONFIG_PATH}"
  export PYTHONDONTWRITEBYTECODE=1
}

cmd="${1:-help}"
[[ $# -gt 0 ]] && shift
case "$cmd" in
  setup)
    setup ;;
  lab)
    setup; activate
    browser=()
    if [[ -z "${DISPLAY:-}${WAYLAND_DISPLAY:-}" && "$(uname)" != "Darwin" ]]; then
      browser=(--no-browser)               # headless: print the URL instead
    fi
    if [[ "$(id -u)" == 0 ]]; then
      browser+=(--allow-root)              # containers and CI machines run as root
    fi
    exec jupyter lab "${browser[@]}" --ServerApp.ip=127.0.0.1 \
      --ServerApp.root_dir="$ROOT" "$@" ;;
  test)
    setup; activate
    cd "$ROOT"
    exec python -m pytest "$@" ;;
  release|strip|check|execute)
    setup; activate
    cd "$ROOT"
    exec python -m goingdeeper.course "$cmd" ;;
  grade)
    setup; activate
    exec python "$ROOT/autograder/grade.py" "$@" ;;
  nbgrader)
    setup; activate
    cd "$ROOT/autograder"
    exec nbgrader "$@" ;;
  help|-h|--help)
    sed -n '2,/^[^#]/{/^#/p}' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
  *)
    die "unknown command '$cmd'. Try: bash course.sh help" ;;
esac
