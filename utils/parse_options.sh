# Source this after setting defaults: Kaldi-style option parsing for shell scripts.
#   --foo-bar VALUE  or  --foo_bar VALUE  sets the shell variable foo_bar (it must already exist);
#                    if foo_bar is an array (foo_bar=()), each use appends VALUE (a repeatable option)
#   --help / -h      prints $help_message and exits 0
# Boolean options take an explicit value (--use-gpu true). Parsing stops at the first
# argument that does not start with "--"; what remains stays in "$@".

while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      printf '%s\n' "${help_message:-No help available.}"
      exit 0 ;;
    --*=*)
      echo "ERROR: $0: write options as '--name value', not '$1'" >&2
      exit 1 ;;
    --*)
      _name="${1#--}"
      _name="${_name//-/_}"
      if ! declare -p "$_name" > /dev/null 2>&1; then
        echo "ERROR: $0: unknown option '$1' (see $0 --help)" >&2
        exit 1
      fi
      if [ $# -lt 2 ]; then
        echo "ERROR: $0: option '$1' needs a value" >&2
        exit 1
      fi
      if [[ "$(declare -p "$_name")" == "declare -a"* ]]; then
        eval "$_name+=(\"\$2\")"
      else
        printf -v "$_name" '%s' "$2"
      fi
      shift 2 ;;
    *) break ;;
  esac
done
unset _name
