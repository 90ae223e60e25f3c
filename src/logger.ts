import { pino, destination, type Logger } from 'pino';

export type { Logger };

/** Keys whose values never reach a log line, wherever they appear. */
const REDACT = [
  'secretKey',
  'accessKey',
  '*.secretKey',
  '*.accessKey',
  '*.*.secretKey',
  '*.*.accessKey',
  'password',
  '*.password',
  'token',
  'secret',
  '*.secret',
  '*.token',
  'authorization',
  '*.authorization',
  '*.headers.authorization',
];

export function createLogger(opts: { level?: string; name?: string; pretty?: boolean } = {}): Logger {
  const pretty = opts.pretty ?? (process.stderr.isTTY && !process.env.CI);
  return pino({
    name: opts.name ?? 'conveyor',
    level: opts.level ?? process.env.LOG_LEVEL ?? 'info',
    redact: { paths: REDACT, censor: '[redacted]' },
    ...(pretty
      ? { transport: { target: 'pino-pretty', options: { destination: 2, colorize: true, translateTime: 'HH:MM:ss.l' } } }
      : {}),
  }, pretty ? undefined : destination(2));
}
