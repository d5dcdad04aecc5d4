#!/usr/bin/env bash
# Going Deeper: one entry point for students, readers, instructors and CI.
#
#   bash course.sh lab [ARGS]     set up (first time) and open the notebooks in JupyterLab (ARGS go to it)
#   bash course.sh setup          only create or update the virtual environment
#   bash course.sh help           this list
#
# Instructors and self-study readers (the full repository; the student edition has none of these):
#
#   bash course.sh lab --instructor   open the repository root, with the Formgrader and nbgrader's menus
#   bash course.sh test [ARGS]    set up (first time) and run every test (ARGS go to pytest)
#   bash course.sh release        regenerate notebooks/ from solutions/
#   bash course.sh strip          strip outputs and widget state, normalise the metadata of the notebooks
#   bash course.sh check          fail if notebooks/ is stale or a notebook carries outputs
#   bash course.sh site [DIR]     the reader's edition: run the solved series into a static site that
#                                 works offline (build/site/; --fast, --timeout SECONDS, --only A)
#   bash course.sh student-edition [DIR]   what students receive: a folder and a zip (build/student-edition/)
#   bash course.sh nbgrader ARGS  run nbgrader with the course configuration (autograder/)
#   bash course.sh grade A|all    grade submissions: parallel, sandboxed, tamper-resistant, with a report
#                                 (--shard i/N --bundle DIR: one shard of a large class; --scheduler ADDRESS: on Dask)
#   bash course.sh grade merge DIR...         the shards' bundles into the gradebook and the class's reports
#   bash course.sh grade deploy k8s|slurm A   a Kubernetes Indexed Job or a Slurm array script for the shards
#   bash course.sh grade report A|all         rebuild the class's reports from the gradebook, grading nothing
#   bash course.sh roster import FILE         the LMS's roster CSV (Canvas or Moodle) into the gradebook
#   bash course.sh export canvas|moodle A|all --out FILE   grades in the layout the LMS imports
#   bash course.sh feedback release A         every student's feedback at once, after the last extension
#   bash course.sh similarity A               pairs of students with similar answers, into the report
#
# The virtual environment lives in .venv/ (override with GOINGDEEPER_VENV) and is
# reused; it is reinstalled only when requirements.txt or pyproject.toml change, and
# rebuilt when an interrupted setup left it incomplete (only one that course.sh made, or
# .venv/: another virtual environment without pip gets pip from ensurepip, nothing deleted).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${GOINGDEEPER_VENV:-$ROOT/.venv}"
STAMP="$VENV/.goingdeeper-installed"   # written only once an installation has finished
MADE="$VENV/.goingdeeper-created"       # written when course.sh has made the virtual environment
# The student edition (bash course.sh student-edition) carries this file, and no solutions/ or autograder/.
STUDENT_EDITION=0
[[ -f "$ROOT/.student-edition" ]] && STUDENT_EDITION=1

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

full_repository_only() {
  if [[ "$STUDENT_EDITION" == 1 ]]; then
    die "'bash course.sh $*' is for instructors and needs the full course repository (solutions/, autograder/, tests/), which the student edition does not ship. Students: 'bash course.sh lab' opens the notebooks; each test cell checks your answer when you run it."
  fi
}

make_exchange() {
  # nbgrader's exchange for the instructor's lab (autograder/nbgrader_config.py points there unless
  # GOINGDEEPER_EXCHANGE is set). World-writable, as nbgrader's release_assignment makes it.
  if [[ -d "$ROOT/autograder" && -z "${GOINGDEEPER_EXCHANGE:-}" && ! -d "$ROOT/autograder/exchange" ]]; then
    mkdir -p "$ROOT/autograder/exchange" && chmod 0777 "$ROOT/autograder/exchange"
  fi
}

venv_problem() {
  # Why $VENV cannot be installed into as it is (one phrase), or nothing when it can.
  if [[ ! -e "$VENV/bin/python" ]]; then
    echo "it has no python"
  elif ! "$VENV/bin/python" -c '' >/dev/null 2>&1; then
    echo "its python does not run"
  elif ! "$VENV/bin/python" -c 'import pip' >/dev/null 2>&1; then
    echo "it has no pip"
  elif [[ -f "$MADE" && ! -f "$STAMP" ]]; then
    echo "its first installation did not finish"
  fi
}

ours() {
  # Whether course.sh may rebuild $VENV: it made it (the marker, written before `python -m venv`
  # runs), or it is the course's own .venv/.
  [[ -f "$MADE" ]] && return 0
  [[ -d "$VENV" && "$(cd "$VENV" && pwd -P)" == "$(cd "$ROOT" && pwd -P)/.venv" ]]
}

not_a_venv() {
  # $1: why $VENV cannot be used. Never delete a folder that is not a virtual environment: refuse.
  if [[ -n "${GOINGDEEPER_VENV:-}" ]]; then
    die "GOINGDEEPER_VENV points at '$VENV', which is not a virtual environment (it has no pyvenv.cfg) and $1. Point GOINGDEEPER_VENV at a virtual environment (or a conda environment) with Python 3.11, or at a folder that does not exist yet (setup creates it there); course.sh deletes nothing that is not a virtual environment."
  fi
  die "'$VENV' is not a virtual environment (it has no pyvenv.cfg) and $1. Move it out of the way (course.sh deletes nothing that is not a virtual environment), or point GOINGDEEPER_VENV at another folder."
}

setup() {
  make_exchange
  local want py problem here rebuild=0
  want="$(cat "$ROOT/requirements.txt" "$ROOT/pyproject.toml" | cksum)"
  if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]] && "$VENV/bin/python" -c '' >/dev/null 2>&1; then
    return 0
  fi
  if [[ -e "$VENV" && ! -d "$VENV" ]]; then
    not_a_venv "it is not a folder"
  fi
  if [[ -d "$VENV" && -n "$(ls -A "$VENV")" ]]; then
    problem="$(venv_problem)"
    if [[ -n "$problem" ]] && ours; then
      # Made by course.sh (maybe only the marker and part of a venv: interrupted) or the course's .venv/.
      [[ -f "$VENV/pyvenv.cfg" || -f "$MADE" ]] || not_a_venv "$problem"
      here="$(cd "$VENV" && pwd -P)"
      if [[ "$here" == / || "$here" == "$(cd "$ROOT" && pwd -P)" || "$here" == "$(cd ~ 2>/dev/null && pwd -P)" ]]; then
        die "'$VENV' holds a virtual environment that $problem, but it is also $ROOT, your home or /: course.sh will not rebuild it there. Point GOINGDEEPER_VENV at another folder."
      fi
      rebuild=1
    elif [[ -n "$problem" ]]; then
      # Someone else's virtual environment (uv venv, a GOINGDEEPER_VENV of one's own): never wiped.
      [[ -f "$VENV/pyvenv.cfg" ]] || not_a_venv "$problem"
      if [[ "$problem" != "it has no pip" ]]; then
        die "the virtual environment $VENV (course.sh did not make it) $problem; course.sh will not rebuild it, as that would delete what is installed there. Repair or remove it yourself, or point GOINGDEEPER_VENV at a folder that does not exist yet (setup creates one there)."
      fi
      echo "course.sh: the virtual environment $VENV has no pip; installing it with ensurepip (nothing else in it changes)"
      "$VENV/bin/python" -m ensurepip --upgrade >/dev/null ||
        die "ensurepip could not install pip into $VENV, which course.sh did not make and will not rebuild (that would delete what is installed there). Install pip into it yourself (e.g. uv pip install --python '$VENV/bin/python' pip), or point GOINGDEEPER_VENV at a folder that does not exist yet (setup creates one there)."
    fi
  fi
  if [[ ! -d "$VENV" || -z "$(ls -A "$VENV")" || "$rebuild" == 1 ]]; then
    py="$(find_python)" || die "Python 3.11 is needed (the course pins torch==2.13.0 for it). Install it, or point PYTHON=/path/to/python3.11 at one."
    # The marker comes first: a setup interrupted from here on leaves a folder course.sh knows it made.
    mkdir -p "$VENV"
    : > "$MADE"
    if [[ "$rebuild" == 1 ]]; then
      echo "course.sh: the virtual environment $VENV is incomplete (an earlier setup was interrupted?); rebuilding it"
      # Empty the folder but for the marker (entries only: a link is removed, never followed), then make it anew.
      find "$VENV" -mindepth 1 -maxdepth 1 ! -name "$(basename "$MADE")" -exec rm -rf -- {} + ||
        die "could not empty $VENV to rebuild it"
      "$py" -m venv "$VENV" || die "could not rebuild $VENV (on Debian/Ubuntu: apt install python3.11-venv)"
    else
      echo "course.sh: creating the virtual environment $VENV with $py"
      "$py" -m venv "$VENV" || die "could not create $VENV (on Debian/Ubuntu: apt install python3.11-venv)"
    fi
  fi
  echo "course.sh: installing the pinned packages into $VENV (first run takes a few minutes)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -r "$ROOT/requirements.txt"
  "$VENV/bin/python" -m pip install --quiet --no-deps -e "$ROOT"
  echo "$want" > "$STAMP"
}

activate() {
  # $1: the course's Jupyter configuration folders (default: nbgrader's, in autograder/).
  local config="${1:-$ROOT/autograder}"
  export PATH="$VENV/bin:$PATH"            # nbgrader shells out to alembic
  export JUPYTER_CONFIG_PATH="$config${JUPYTER_CONFIG_PATH:+:$JUPYTER_CONFIG_PATH}"
  export PYTHONDONTWRITEBYTECODE=1
}

cmd="${1:-help}"
[[ $# -gt 0 ]] && shift
case "$cmd" in
  setup)
    setup ;;
  lab)
    mode=student
    args=()
    for arg in "$@"; do
      if [[ "$arg" == --instructor ]]; then mode=instructor; else args+=("$arg"); fi
    done
    if [[ "$mode" == instructor ]]; then
      full_repository_only lab --instructor
      setup; activate "$ROOT/autograder:$ROOT/jupyter-config/lab"
      lab_root="$ROOT"                     # solutions/, notebooks/ and the Formgrader
    else
      setup; activate "$ROOT/jupyter-config/student:$ROOT/jupyter-config/lab"
      lab_root="$ROOT/notebooks"           # the notebooks, and nbgrader's Validate button
    fi
    browser=()
    if [[ -z "${DISPLAY:-}${WAYLAND_DISPLAY:-}" && "$(uname)" != "Darwin" ]]; then
      browser=(--no-browser)               # headless: print the URL instead
    fi
    if [[ "$(id -u)" == 0 ]]; then
      browser+=(--allow-root)              # containers and CI machines run as root
    fi
    exec jupyter lab ${browser[@]+"${browser[@]}"} --ServerApp.ip=127.0.0.1 \
      --ServerApp.root_dir="$lab_root" ${args[@]+"${args[@]}"} ;;
  test)
    full_repository_only test
    setup; activate
    cd "$ROOT"
    exec python -m pytest "$@" ;;
  release|strip|check)
    full_repository_only "$cmd"
    setup; activate
    cd "$ROOT"
    exec python -m instructor.course "$cmd" ;;
  site)
    full_repository_only site
    setup; activate
    exec python -m instructor.reader "$@" ;;
  student-edition)
    full_repository_only student-edition
    setup; activate
    exec python -m instructor.editions "$@" ;;
  execute)
    die "'execute' became 'bash course.sh site': a static site of the solved series that works offline (see bash course.sh help)" ;;
  grade)
    full_repository_only grade
    setup; activate
    exec python "$ROOT/autograder/grade.py" "$@" ;;
  roster|export)
    full_repository_only "$cmd"
    setup; activate
    exec python -m instructor.lms "$cmd" "$@" ;;
  feedback)
    full_repository_only feedback
    setup; activate
    exec python -m instructor.feedback "$@" ;;
  similarity)
    full_repository_only similarity
    setup; activate
    exec python -m instructor.similarity "$@" ;;
  nbgrader)
    full_repository_only nbgrader
    setup; activate
    cd "$ROOT/autograder"
    exec nbgrader "$@" ;;
  help|-h|--help)
    if [[ "$STUDENT_EDITION" == 1 ]]; then
      # The student edition lists only its own commands.
      awk 'NR == 1 { next } !/^#/ { exit } /^# Instructors/ { skip = 1 } /^# The virtual/ { skip = 0 } !skip' \
        "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      echo
      echo "This is the student edition: the instructors' commands (test, grade, release, ...) are not part of it."
    else
      sed -n '2,/^[^#]/{/^#/p}' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    fi ;;
  *)
    die "unknown command '$cmd'. Try: bash course.sh help" ;;
esac
