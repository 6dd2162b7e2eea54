/** src/report: engine events -> live view (ora) / plain lines / NDJSON, final summary, report files, metrics. */
export { createRenderer, PLAIN_LINES, type Renderer, type RendererOptions } from './renderer.js';
export {
  summarize,
  whatToDoNow,
  tailLines,
  HOST_STATUSES,
  PROBLEM_STATUSES,
  type RunSummary,
  type HostSummary,
  type RollbackSummary,
} from './summary.js';
export { summaryText, colorAllowed, stripAnsi } from './text.js';
export { writeReports, renderReport, reportFormatOf, type ReportFormat } from './files.js';
export { writeMetrics, renderMetrics, parsePromText, type PromSample } from './metrics.js';
