// Whether a process exists, by PID (signal 0 checks without sending anything). EPERM means it
// exists but belongs to someone else: alive. Used for lock files left by dead owners and by tests.
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
