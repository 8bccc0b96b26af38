// The soak's resource plot as a PNG, with no dependency: an RGB raster, lines, a 5x7 pixel font for the
// labels, and the PNG container (signature, IHDR, one zlib-compressed IDAT, IEND, CRC-32 per chunk).
import zlib from 'node:zlib';

export interface Line {
  label: string;
  points: { x: number; y: number }[]; // data units
}

export interface Panel {
  title: string;
  yUnit: string;
  lines: Line[];
}

const PALETTE: [number, number, number][] = [
  [31, 119, 180],
  [255, 127, 14],
  [44, 160, 44],
  [214, 39, 40],
  [148, 103, 189],
  [140, 86, 75],
  [227, 119, 194],
  [127, 127, 127],
  [188, 189, 34],
  [23, 190, 207],
];

// 5x7 glyphs, one row per string of five cells ('#' on).
const FONT: Record<string, string> = {
  '0': '.###.#...##..###.#.###..##...#.###.',
  '1': '..#...##....#....#....#....#...###.',
  '2': '.###.#...#....#...#...#...#...#####',
  '3': '#####...#...#.....#.....##...#.###.',
  '4': '...#...##..#.#.#..#.#####...#....#.',
  '5': '######....####.....#....##...#.###.',
  '6': '..##..#...#....####.#...##...#.###.',
  '7': '#####....#...#...#...#....#....#...',
  '8': '.###.#...##...#.###.#...##...#.###.',
  '9': '.###.#...##...#.####....#...#..##..',
  A: '.###.#...##...#######...##...##...#',
  B: '####.#...##...#####.#...##...#####.',
  C: '.###.#...##....#....#....#...#.###.',
  D: '###..#..#.#...##...##...##..#.###..',
  E: '######....#....####.#....#....#####',
  F: '######....#....####.#....#....#....',
  G: '.###.#...##....#.####...##...#.####',
  H: '#...##...##...#######...##...##...#',
  I: '.###...#....#....#....#....#...###.',
  J: '..###...#....#....#....##..#..##...',
  K: '#...##..#.#.#..##...#.#..#..#.#...#',
  L: '#....#....#....#....#....#....#####',
  M: '#...###.###.#.##...##...##...##...#',
  N: '#...##...###..##.#.##..###...##...#',
  O: '.###.#...##...##...##...##...#.###.',
  P: '####.#...##...#####.#....#....#....',
  Q: '.###.#...##...##...##.#.##..#..##.#',
  R: '####.#...##...#####.#.#..#..#.#...#',
  S: '.#####....#.....###.....#....#####.',
  T: '#####..#....#....#....#....#....#..',
  U: '#...##...##...##...##...##...#.###.',
  V: '#...##...##...##...##...#.#.#...#..',
  W: '#...##...##...##.#.##.#.##.#.#.#.#.',
  X: '#...##...#.#.#...#...#.#.#...##...#',
  Y: '#...##...#.#.#...#....#....#....#..',
  Z: '#####....#...#...#...#...#....#####',
  ' ': '...................................',
  '-': '...............#####...............',
  '.': '..........................##...##..',
  ':': '......##...##........##...##.......',
  '/': '.........#...#...#...#...#.........',
  '(': '...#...#...#....#....#.....#.....#.',
  ')': '.#.....#.....#....#....#...#...#...',
  '%': '##...##..#...#...#...#...#..##...##',
};

class Raster {
  readonly data: Buffer;

  constructor(
    readonly width: number,
    readonly height: number,
  ) {
    this.data = Buffer.alloc(width * height * 3, 255);
  }

  set(x: number, y: number, [r, g, b]: [number, number, number]): void {
    x = Math.round(x);
    y = Math.round(y);
    if (x < 0 || y < 0 || x >= this.width || y >= this.height) return;
    const at = (y * this.width + x) * 3;
    this.data[at] = r;
    this.data[at + 1] = g;
    this.data[at + 2] = b;
  }

  line(x0: number, y0: number, x1: number, y1: number, color: [number, number, number], thick = 1): void {
    const steps = Math.max(1, Math.ceil(Math.max(Math.abs(x1 - x0), Math.abs(y1 - y0))));
    for (let i = 0; i <= steps; i++) {
      const x = x0 + ((x1 - x0) * i) / steps;
      const y = y0 + ((y1 - y0) * i) / steps;
      for (let dx = 0; dx < thick; dx++) for (let dy = 0; dy < thick; dy++) this.set(x + dx, y + dy, color);
    }
  }

  rect(x: number, y: number, w: number, h: number, color: [number, number, number]): void {
    for (let i = 0; i < w; i++) for (let j = 0; j < h; j++) this.set(x + i, y + j, color);
  }

  text(x: number, y: number, text: string, color: [number, number, number] = [0, 0, 0], scale = 1): void {
    for (const ch of text.toUpperCase()) {
      const glyph = FONT[ch] ?? FONT[' ']!;
      for (let row = 0; row < 7; row++)
        for (let col = 0; col < 5; col++) if (glyph[row * 5 + col] === '#') this.rect(x + col * scale, y + row * scale, scale, scale, color);
      x += 6 * scale;
    }
  }

  png(): Buffer {
    const raw = Buffer.alloc((this.width * 3 + 1) * this.height);
    for (let y = 0; y < this.height; y++) this.data.copy(raw, y * (this.width * 3 + 1) + 1, y * this.width * 3, (y + 1) * this.width * 3); // filter 0 per row
    const header = Buffer.alloc(13);
    header.writeUInt32BE(this.width, 0);
    header.writeUInt32BE(this.height, 4);
    header.set([8, 2, 0, 0, 0], 8); // 8-bit RGB, deflate, no filter method, no interlace
    return Buffer.concat([
      Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
      chunk('IHDR', header),
      chunk('IDAT', zlib.deflateSync(raw)),
      chunk('IEND', Buffer.alloc(0)),
    ]);
  }
}

function chunk(type: string, body: Buffer): Buffer {
  const out = Buffer.alloc(12 + body.length);
  out.writeUInt32BE(body.length, 0);
  out.write(type, 4, 'latin1');
  body.copy(out, 8);
  out.writeUInt32BE(zlib.crc32(out.subarray(4, 8 + body.length)), 8 + body.length);
  return out;
}

/** Panels stacked vertically, sharing the x axis (seconds); a legend of every line's label on the right. */
export function plot(panels: Panel[], xUnit: string): Buffer {
  const width = 1100;
  const panelHeight = 300;
  const left = 70;
  const plotWidth = 700;
  const top = 30;
  const height = top + panels.length * (panelHeight + 40);
  const raster = new Raster(width, height);
  const xs = panels.flatMap((p) => p.lines.flatMap((l) => l.points.map((pt) => pt.x)));
  const xMax = Math.max(1, ...xs);
  const labels = [...new Set(panels.flatMap((p) => p.lines.map((l) => l.label)))];
  const colorOf = (label: string) => PALETTE[labels.indexOf(label) % PALETTE.length]!;
  panels.forEach((panel, i) => {
    const y0 = top + i * (panelHeight + 40);
    const ys = panel.lines.flatMap((l) => l.points.map((pt) => pt.y));
    const yMax = niceCeiling(Math.max(1, ...ys));
    raster.text(left, y0 - 18, `${panel.title} (${panel.yUnit})`, [0, 0, 0], 2);
    raster.line(left, y0, left, y0 + panelHeight, [0, 0, 0]);
    raster.line(left, y0 + panelHeight, left + plotWidth, y0 + panelHeight, [0, 0, 0]);
    for (let k = 0; k <= 4; k++) {
      const y = y0 + panelHeight - (panelHeight * k) / 4;
      raster.line(left - 4, y, left + plotWidth, y, k === 0 ? [0, 0, 0] : [225, 225, 225]);
      raster.text(4, y - 3, formatNumber((yMax * k) / 4));
    }
    for (let k = 0; k <= 5; k++) {
      const x = left + (plotWidth * k) / 5;
      raster.line(x, y0 + panelHeight, x, y0 + panelHeight + 4, [0, 0, 0]);
      raster.text(x - 12, y0 + panelHeight + 8, formatNumber((xMax * k) / 5));
    }
    raster.text(left + plotWidth + 8, y0 + panelHeight + 8, xUnit);
    for (const l of panel.lines) {
      const color = colorOf(l.label);
      const px = (x: number) => left + (x / xMax) * plotWidth;
      const py = (y: number) => y0 + panelHeight - (y / yMax) * panelHeight;
      for (let k = 1; k < l.points.length; k++) raster.line(px(l.points[k - 1]!.x), py(l.points[k - 1]!.y), px(l.points[k]!.x), py(l.points[k]!.y), color, 2);
    }
  });
  labels.forEach((label, k) => {
    const y = top + k * 14;
    raster.rect(left + plotWidth + 30, y, 10, 8, colorOf(label));
    raster.text(left + plotWidth + 46, y, label.slice(0, 38));
  });
  return raster.png();
}

function niceCeiling(v: number): number {
  const magnitude = 10 ** Math.floor(Math.log10(v));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * magnitude >= v) return step * magnitude;
  return 10 * magnitude;
}

function formatNumber(v: number): string {
  return v >= 100 ? String(Math.round(v)) : v >= 10 ? v.toFixed(0) : v.toFixed(1);
}
