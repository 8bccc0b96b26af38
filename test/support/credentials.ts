// Credentials as tests present and store them: a Basic header value, and an htpasswd {SHA} entry.
import crypto from 'node:crypto';

export const basic = (user: string, pass: string): string => 'Basic ' + Buffer.from(`${user}:${pass}`).toString('base64');

export const sha = (pass: string): string => '{SHA}' + crypto.createHash('sha1').update(pass).digest('base64');
