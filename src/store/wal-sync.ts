// Durability without the wait on the event loop. The writer commits with
// synchronous=NORMAL: the commit writes the batch's frames into the WAL file
// but does not wait for the disk. Then the WAL file is synced on libuv's
// thread pool, and the batch is answered only once that sync, begun after
// its commit, has completed. docs/design.md argues why an answered event
// survives a power cut.
import { fdatasync, openSync, closeSync } from 'node:fs';

export class WalSync {
  private fd: number | undefined;
  private running: Promise<void> | undefined;
  private next: Promise<void> | undefined;

  constructor(private readonly walFile: string) {}

  /** Settles once a sync of the WAL begun after this call has completed. */
  afterCommit(): Promise<void> {
    if (this.running === undefined) return (this.running = this.sync());
    // The running sync may have begun before this commit wrote its frames: wait for the one after it.
    this.next ??= this.running
      .catch(() => undefined)
      .then(() => {
        this.next = undefined;
        return (this.running = this.sync());
      });
    return this.next;
  }

  private sync(): Promise<void> {
    return new Promise((resolve, reject) => {
      // Opened once: the WAL file keeps its inode while the writer's connection is open (SQLite
      // deletes it only when the last connection closes, and truncates it in place otherwise).
      this.fd ??= openSync(this.walFile, 'r+');
      fdatasync(this.fd, (error) => {
        this.running = undefined;
        if (error) reject(error);
        else resolve();
      });
    });
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}
