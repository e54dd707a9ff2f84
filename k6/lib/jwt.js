// HS256 JSON Web Tokens minted inside k6, the same shape the `token` CLI prints:
// header {"alg":"HS256","typ":"JWT"}, claims {sub, role, iat, exp}.
import crypto from 'k6/crypto';
import encoding from 'k6/encoding';

const HEADER = base64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));

/** Base64url without padding (RFC 7515 section 2) of a UTF-8 string. */
export function base64url(text) {
  return encoding.b64encode(text, 'rawurl');
}

/**
 * Mints an HS256 token for `sub` with `role` ("user" or "admin") valid for
 * `ttlSeconds` from now.
 */
export function mintToken(secret, sub, role, ttlSeconds) {
  if (!secret) {
    throw new Error('mintToken: empty secret');
  }
  const now = Math.floor(Date.now() / 1000);
  const claims = base64url(JSON.stringify({ sub: String(sub), role: role, iat: now, exp: now + ttlSeconds }));
  const signingInput = `${HEADER}.${claims}`;
  return `${signingInput}.${crypto.hmac('sha256', secret, signingInput, 'base64rawurl')}`;
}
