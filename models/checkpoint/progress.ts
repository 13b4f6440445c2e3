/**
 * A one-line terminal progress bar for loading large files. It draws on stderr only when stderr
 * is a terminal (so logs and pipes stay clean) and redraws at most every `intervalMs`.
 *
 * @module
 */

import { platform } from "../../platform/current.ts";

/** A running progress bar. */
export interface ProgressBar {
  /** Reports progress: `done` units of `total` (redrawn if the throttle interval has passed). */
  update(done: number): void;
  /** Draws the final state and ends the line. Later calls do nothing. */
  finish(): void;
}

/** Options of {@link createProgressBar} (the defaults suit real use; tests override them). */
export interface ProgressBarOptions {
  /** Whether to draw at all. Default: when stderr is a terminal (never in a browser). */
  enabled?: boolean;
  /** Where text goes. Default: synchronous writes to stderr. */
  write?: (text: string) => void;
  /** Minimum milliseconds between redraws. Default 100. */
  intervalMs?: number;
  /** Clock in milliseconds. Default `performance.now`. */
  now?: () => number;
  /** Bar width in characters. Default 30. */
  width?: number;
  /** How to print amounts: "bytes" (KiB/MiB/GiB, default) or plain "count". */
  unit?: "bytes" | "count";
}

/**
 * Formats a byte count with a binary unit, e.g. `1.5 GiB`.
 *
 * @param n Bytes.
 */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let u = 0;
  while (n >= 1024 && u < units.length - 1) {
    n /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${n.toFixed(1)} ${units[u]}`;
}

/**
 * Creates a progress bar such as `weights [#######.......] 48% 120.0 MiB / 250.0 MiB 80.1 MiB/s`.
 *
 * @param label Text before the bar.
 * @param total Amount that means 100% (values ≤ 0 draw as complete).
 * @param opts Output, throttle and formatting overrides.
 */
export function createProgressBar(
  label: string,
  total: number,
  opts: ProgressBarOptions = {},
): ProgressBar {
  const enabled = opts.enabled ?? platform.stderrIsTerminal();
  const write = opts.write ?? platform.writeStderr;
  const interval = opts.intervalMs ?? 100;
  const now = opts.now ?? (() => performance.now());
  const width = opts.width ?? 30;
  const fmt = opts.unit === "count" ? (n: number) => String(n) : formatBytes;
  const start = now();
  let last = -Infinity;
  let done = 0;
  let finished = false;

  const render = () => {
    const frac = total > 0 ? Math.min(1, Math.max(0, done / total)) : 1;
    const filled = Math.round(frac * width);
    const pct = String(Math.floor(frac * 100)).padStart(3);
    const secs = (now() - start) / 1000;
    const rate = opts.unit !== "count" && secs > 0 ? ` ${formatBytes(done / secs)}/s` : "";
    // \r returns to column 0; ESC[K clears what a longer previous line left behind.
    write(
      `\r${label} [${"#".repeat(filled)}${".".repeat(width - filled)}] ${pct}% ` +
        `${fmt(done)} / ${fmt(total)}${rate}\x1b[K`,
    );
  };

  return {
    update(d: number) {
      if (!enabled || finished) return;
      done = d;
      const t = now();
      if (t - last < interval) return;
      last = t;
      render();
    },
    finish() {
      if (!enabled || finished) return;
      finished = true;
      render();
      write("\n");
    },
  };
}
