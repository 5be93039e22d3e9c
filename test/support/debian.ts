// A command from Debian's packages that a test needs (chromium, promtool):
// installed with apt-get where it is missing, as the set-up of a fresh
// machine; where that cannot be done, the test fails and says so.
import { execFileSync, spawnSync } from 'node:child_process';

const present = (command: string) => spawnSync('sh', ['-c', `command -v ${command}`]).status === 0;

export function needDebianCommand(command: string, debianPackage: string): void {
  if (present(command)) return;
  const install = () => execFileSync('apt-get', ['install', '-y', '--no-install-recommends', debianPackage], { stdio: 'ignore' });
  try {
    try {
      install();
    } catch {
      // A fresh machine has no package lists yet.
      execFileSync('apt-get', ['update'], { stdio: 'ignore' });
      install();
    }
  } catch (error) {
    throw new Error(`this test needs ${command} from Debian's ${debianPackage} package, and apt-get could not install it: ${(error as Error).message}`);
  }
  if (!present(command)) throw new Error(`apt-get installed ${debianPackage}, but there is still no ${command}`);
}
