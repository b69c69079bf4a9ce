# Source this file: it creates the project's virtualenv on first use (pinned versions from
# requirements.txt), activates it, and puts the recipe on PYTHONPATH. Later calls only activate.
# VOXADAPT_VENV overrides where the virtualenv lives; KALDI_ROOT (optional) adds Kaldi's binaries.

VOXADAPT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export VOXADAPT_ROOT
_venv="${VOXADAPT_VENV:-$VOXADAPT_ROOT/.venv}"

_voxadapt_setup_venv() {
  # The stamp holds a hash of what was installed, so editing requirements.txt re-installs.
  local want stamp="$_venv/.voxadapt-installed"
  want="$(cat "$VOXADAPT_ROOT/requirements.txt" "$VOXADAPT_ROOT/pyproject.toml" | sha1sum | cut -c1-40)"
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && return 0
  mkdir -p "$(dirname "$_venv")"
  (
    # One installer at a time: parallel jobs sourcing path.sh wait here.
    flock 9
    [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && exit 0
    echo "path.sh: setting up $_venv (first use; about two minutes) ..." >&2
    log="$_venv.install.log"
    if { [ -x "$_venv/bin/python" ] || python3 -m venv "$_venv"; } > "$log" 2>&1 &&
      "$_venv/bin/python" -m pip install --disable-pip-version-check -r "$VOXADAPT_ROOT/requirements.txt" >> "$log" 2>&1 &&
      "$_venv/bin/python" -m pip install --disable-pip-version-check --no-deps --no-build-isolation \
        -e "$VOXADAPT_ROOT" >> "$log" 2>&1; then
      echo "$want" > "$stamp"
    else
      tail -n 20 "$log" >&2
      echo "path.sh: installation failed; the full log is $log" >&2
      exit 1
    fi
  ) 9> "$_venv.lock"
}

if ! _voxadapt_setup_venv; then
  return 1 2> /dev/null || exit 1
fi
unset -f _voxadapt_setup_venv

# shellcheck disable=SC1091
. "$_venv/bin/activate"
unset _venv
export PYTHONPATH="$VOXADAPT_ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export LC_ALL=C  # Kaldi's sort order for data-dir files
if [ -n "${KALDI_ROOT:-}" ]; then
  export PATH="$KALDI_ROOT/src/bin:$KALDI_ROOT/src/ivectorbin:$KALDI_ROOT/tools/openfst/bin:$PATH"
fi
