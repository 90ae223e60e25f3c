/**
 * Names become parts of object keys and URLs, so they are a closed alphabet:
 * no "/", "\\", "..", "%" or absolute paths can ever reach the store.
 */
export const NAME_PATTERN = /^[a-z0-9][a-z0-9_-]{0,62}$/;

export function isValidName(value: string): boolean {
  return NAME_PATTERN.test(value);
}
