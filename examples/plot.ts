/**
 * A dependency-free SVG line plot of accuracy against sequence length (log₂ axis).
 *
 * @module
 */

/** Renders `rows` (length, accuracy in [0, 1]) as an SVG document. */
export function accuracyPlotSvg(
  rows: readonly { length: number; accuracy: number }[],
  subtitle: string,
): string {
  const w = 640, h = 400, left = 70, right = 20, top = 50, bottom = 60;
  const lo = Math.log2(Math.min(...rows.map((r) => r.length)));
  const hi = Math.max(Math.log2(Math.max(...rows.map((r) => r.length))), lo + 1);
  const x = (len: number) => left + ((Math.log2(len) - lo) / (hi - lo)) * (w - left - right);
  const y = (acc: number) => top + (1 - acc) * (h - top - bottom);
  const esc = (s: string) => s.replace(/[<>&"]/g, (c) => `&#${c.charCodeAt(0)};`);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" font-family="sans-serif">`,
    `<rect width="${w}" height="${h}" fill="white"/>`,
    `<text x="${
      w / 2
    }" y="22" text-anchor="middle" font-size="16">Induction heads: accuracy vs sequence length (trained at 256)</text>`,
    `<text x="${w / 2}" y="40" text-anchor="middle" font-size="11" fill="#555">${
      esc(subtitle)
    }</text>`,
  ];
  for (const acc of [0, 0.25, 0.5, 0.75, 1]) {
    parts.push(
      `<line x1="${left}" x2="${w - right}" y1="${y(acc)}" y2="${y(acc)}" stroke="#ddd"/>`,
      `<text x="${left - 8}" y="${y(acc) + 4}" text-anchor="end" font-size="11">${
        acc * 100
      }%</text>`,
    );
  }
  for (const r of rows) {
    const label = r.length >= 1 << 20
      ? `${r.length / (1 << 20)}M`
      : r.length >= 1024
      ? `${r.length / 1024}K`
      : `${r.length}`;
    parts.push(
      `<line x1="${x(r.length)}" x2="${x(r.length)}" y1="${top}" y2="${
        h - bottom
      }" stroke="#eee"/>`,
      `<text x="${x(r.length)}" y="${
        h - bottom + 18
      }" text-anchor="middle" font-size="11">${label}</text>`,
    );
  }
  parts.push(
    `<text x="${w / 2}" y="${
      h - 15
    }" text-anchor="middle" font-size="12">sequence length (log scale)</text>`,
    `<text x="18" y="${h / 2}" text-anchor="middle" font-size="12" transform="rotate(-90 18 ${
      h / 2
    })">accuracy</text>`,
    `<polyline fill="none" stroke="#1f6feb" stroke-width="2.5" points="${
      rows.map((r) => `${x(r.length).toFixed(1)},${y(r.accuracy).toFixed(1)}`).join(" ")
    }"/>`,
    ...rows.map((r) =>
      `<circle cx="${x(r.length).toFixed(1)}" cy="${
        y(r.accuracy).toFixed(1)
      }" r="4" fill="#1f6feb"/>`
    ),
    `</svg>`,
  );
  return parts.join("\n") + "\n";
}
