export function binaryPath(name: 'temporal' | 'minio'): string;
export function venvDir(): string;
