# Source this: lock_dir FILE takes an exclusive lock on FILE (created if missing) without waiting,
# on a descriptor this shell keeps open, so the lock lasts until the shell and its children end
# (a kill included). The descriptor is left in $lock_fd. Returns 0 when held, 1 when another
# process holds it (then `flock -x "$lock_fd"` waits for it). On a file system without locks
# (some Lustre and NFS mounts) it warns and returns 0: nothing guards the directory there.
lock_dir() {
  local rc=0
  exec {lock_fd}>> "$1"
  flock -n -x -E 75 "$lock_fd" || rc=$?
  [ "$rc" -ne 75 ] || return 1
  [ "$rc" -eq 0 ] || echo "WARNING: cannot lock $1 (flock exit $rc; does this file system support locks?): nothing stops a second run from writing there too" >&2
  return 0
}
