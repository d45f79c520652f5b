-- Revocation lookups: a Login remembers the SHA-256 of the external token it
-- was made for, so a revoked token stays refused even after the cache is gone.
ALTER TABLE logins ADD COLUMN token_hash TEXT;
ALTER TABLE logins ADD COLUMN revoked INTEGER NOT NULL DEFAULT 0;
CREATE INDEX logins_token_hash ON logins (token_hash) WHERE token_hash IS NOT NULL;
