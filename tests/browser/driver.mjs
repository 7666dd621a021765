// Headless Chromium against openchatd (run inside a network namespace with only `lo`).
// Usage: node driver.mjs <openchatd base URL>. Prints `RESULT ok` or `RESULT fail <why>`.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { chromium } from 'playwright-core';

const base = process.argv[2];
const html = readFileSync(new URL('./page.html', import.meta.url));
const server = createServer((_, res) => { res.writeHead(200, { 'content-type': 'text/html' }); res.end(html); });
await new Promise(resolve => server.listen(0, '127.0.0.1', resolve));
const pageUrl = `http://127.0.0.1:${server.address().port}/`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
    '--allow-loopback-in-peer-connection', '--autoplay-policy=no-user-gesture-required',
    '--auto-select-desktop-capture-source=Entire screen'],
});
const deadline = Date.now() + (Number(process.env.DEADLINE_MS) || 90_000);
const pages = [];
const fail = async (why) => {
  for (const page of pages) {
    const dump = await page.evaluate(async () => ({ stats: await window.stats(), state: window.state,
      subState: null })).catch(e => String(e));
    console.log(JSON.stringify(dump).slice(0, 1500));
  }
  console.log(`RESULT fail ${why}`); await browser.close(); server.close(); process.exit(1); };
const open = async (uid, share) => {
  const page = await (await browser.newContext()).newPage();
  page.on('console', m => { if (m.type() === 'error') console.log(`[${uid}] ${m.text()}`); });
  pages.push(page);
  await page.goto(pageUrl);
  await page.evaluate(([b, u, s]) => window.run(b, u, s), [base, uid, share]);
  return page;
};
// Waits until every page receives `audio` audio and `video` video streams that carry media.
const flowing = async (pages, audio, video) => {
  while (Date.now() < deadline) {
    let ok = true;
    for (const page of pages) {
      const stats = await page.evaluate(() => window.stats());
      const a = stats.filter(s => s.kind === 'audio' && s.packets > 20 && s.energy > 0).length;
      const v = stats.filter(s => s.kind === 'video' && s.frames > 10).length;
      if (a < audio || v < video) ok = false;
    }
    if (ok) return true;
    await new Promise(r => setTimeout(r, 500));
  }
  return false;
};

const p1 = await open('uid_page1', true);
const p2 = await open('uid_page2', false);
if (!await flowing([p2], 1, 2)) await fail('page 2 does not receive page 1 audio, camera and screen');
if (!await flowing([p1], 1, 1)) await fail('page 1 does not receive page 2 audio and camera');
const kinds = await p2.evaluate(() => window.state.published.filter(t => t.media_kind === 'video').map(t => t.stream_kind).sort());
if (JSON.stringify(kinds) !== JSON.stringify(['video_camera', 'video_screen'])) await fail(`page 1 video kinds ${kinds}`);
const owners = await p2.evaluate(() => [...new Set(window.state.published.map(t => t.user_uid))]);
if (JSON.stringify(owners) !== JSON.stringify(['uid_page1'])) await fail(`tracks announced for ${owners}`);
// Received streams carry the publishers' stream ids (msid), so tracks map to publishers.
const mapsToPublishers = () => {
  const received = new Set(window.state.received.flatMap(r => r.streams));
  return window.state.published.every(t => received.has(t.stream_id));
};
let mapped = false;
while (!mapped && Date.now() < deadline) {
  mapped = await p2.evaluate(mapsToPublishers);
  if (!mapped) await new Promise(r => setTimeout(r, 200));
}
if (!mapped) await fail('received streams do not carry the publishers\' stream ids');
const p3 = await open('uid_page3', false);
if (!await flowing([p3], 2, 3)) await fail('page 3 does not receive both others');
await p1.evaluate(() => window.leave());
const gone = async (page) => {
  while (Date.now() < deadline) {
    const s = await page.evaluate(() => window.state);
    if (s.unpublished.some(t => t.user_uid === 'uid_page1') && s.left.some(p => p.user_uid === 'uid_page1')) return true;
    await new Promise(r => setTimeout(r, 200));
  }
  return false;
};
if (!await gone(p2) || !await gone(p3)) await fail('leaving did not unpublish and announce the departure');
for (const page of [p1, p2, p3]) {
  const errors = await page.evaluate(() => window.state.errors);
  if (errors.length) await fail(`signaling errors ${JSON.stringify(errors)}`);
}
console.log('RESULT ok');
await browser.close();
server.close();
