// The pages for people (their content is ../pages.ts): the dashboard, the
// API's description and its reference page, and a page a problem type.
import type { Polka, Request } from 'polka';
import sirv from 'sirv';
import type { On } from '../answering.ts';
import { openApiDocument, PROBLEM_TYPES } from '../openapi.ts';
import { DASHBOARD, DOCS_PAGE, problemPage, sendHtml, SWAGGER_UI, UPLOT } from '../pages.ts';
import { HttpProblem, notFound } from '../problem.ts';

export function pageRoutes(app: Polka<Request>, on: On): void {
  // The dashboard: GET / from a browser (POST / stays ingest), its files and uPlot's; what it polls is /stats (./health.ts).
  on('GET', '/', (req, res) => {
    if (!/text\/html/.test(req.headers.accept ?? '')) {
      throw new HttpProblem(406, 'not-acceptable', 'Not acceptable', 'GET / is the dashboard, for a browser (Accept: text/html); POST / takes events');
    }
    res.writeHead(302, { Location: '/dashboard/' });
    res.end();
  });
  app.use('/dashboard/uplot', sirv(UPLOT, { dev: false, etag: true, maxAge: 3600 }));
  app.use('/dashboard', sirv(DASHBOARD, { dev: false, etag: true }));

  // The API's description and its reference page, served from this process: no CDN.
  const document = JSON.stringify(openApiDocument());
  on('GET', '/openapi.json', (_req, res) => {
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(document) });
    res.end(document);
  });
  on('GET', '/docs', (_req, res) => sendHtml(res, DOCS_PAGE));
  app.use('/docs/assets', sirv(SWAGGER_UI, { dev: false, etag: true, maxAge: 3600 }));
  on('GET', '/problems/:kind', (req, res) => {
    // hasOwn: the kind is the client's, and a plain object's lookup would find `constructor` on its prototype.
    const found = Object.hasOwn(PROBLEM_TYPES, req.params.kind) ? PROBLEM_TYPES[req.params.kind] : undefined;
    if (!found) throw notFound(`no problem type ${JSON.stringify(req.params.kind)}`);
    sendHtml(res, problemPage(req.params.kind, found));
  });
}
