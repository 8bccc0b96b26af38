// One updating line on a terminal while `regcache prefetch` downloads: bytes so far, of how many, the
// rate, and which blob. Written only when the output is a terminal: logs and pipes get the summary alone.
import { formatBytes } from '../telemetry/format-bytes.js';

export interface ProgressOutput {
  isTTY?: boolean;
  write(text: string): unknown;
}

const CLEAR_LINE = '\r\x1b[K';

export class TransferProgress {
  private bytes = 0;
  private done = 0;
  private lastDraw = -Infinity;
  private drawn = false;
  private readonly started: number;

  constructor(
    private readonly out: ProgressOutput,
    private readonly label: string,
    private readonly totalBytes: number | null, // null when a descriptor did not give its size
    private readonly items: number,
    private readonly now: () => number = Date.now,
    private readonly intervalMs = 200, // a redraw per chunk would cost more than the download
  ) {
    this.started = now();
  }

  add(bytes: number): void {
    this.bytes += bytes;
    if (this.now() - this.lastDraw >= this.intervalMs) this.draw();
  }

  itemDone(): void {
    this.done++;
    this.draw();
  }

  /** Takes the line away, so that what follows starts on a clean one. */
  finish(): void {
    if (this.drawn) this.out.write(CLEAR_LINE);
    this.drawn = false;
  }

  line(): string {
    const seconds = (this.now() - this.started) / 1000;
    const total = this.totalBytes === null ? '' : ` / ${formatBytes(this.totalBytes)}`;
    const rate = seconds > 0 ? `${formatBytes(Math.round(this.bytes / seconds))}/s` : '-';
    return `${this.label}  ${formatBytes(this.bytes)}${total}  ${rate}  blob ${Math.min(this.done + 1, this.items)}/${this.items}`;
  }

  private draw(): void {
    if (!this.out.isTTY) return;
    this.lastDraw = this.now();
    this.out.write(CLEAR_LINE + this.line());
    this.drawn = true;
  }
}
