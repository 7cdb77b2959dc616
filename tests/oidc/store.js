// In-memory storage for oidc-provider models, shared by every Provider instance of this
// process. Unlike oidc-provider's own MemoryAdapter (an LRU capped at 1000 entries) it can be
// enumerated, which /test/end-session needs to find the sessions of one user, and it survives
// /test/rotate-keys, which builds a new Provider around the same storage.

const models = new Map(); // model name -> Map(id -> { payload, expiresAt })

function table(model) {
  if (!models.has(model)) models.set(model, new Map());
  return models.get(model);
}

function live(entry) {
  return entry && (entry.expiresAt === undefined || entry.expiresAt > Date.now());
}

export class Adapter {
  constructor(model) {
    this.model = model;
    this.rows = table(model);
  }

  async upsert(id, payload, expiresIn) {
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : undefined;
    this.rows.set(id, { payload, expiresAt });
  }

  async find(id) {
    const entry = this.rows.get(id);
    if (!live(entry)) {
      this.rows.delete(id);
      return undefined;
    }
    return entry.payload;
  }

  async findByUid(uid) {
    for (const [id, entry] of this.rows) {
      if (entry.payload.uid === uid) return this.find(id);
    }
    return undefined;
  }

  async findByUserCode(userCode) {
    for (const [id, entry] of this.rows) {
      if (entry.payload.userCode === userCode) return this.find(id);
    }
    return undefined;
  }

  async consume(id) {
    const entry = this.rows.get(id);
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    this.rows.delete(id);
  }

  async revokeByGrantId(grantId) {
    for (const [id, entry] of this.rows) {
      if (entry.payload.grantId === grantId) this.rows.delete(id);
    }
  }
}

/** Live sessions (payloads) whose accountId is `accountId`, with their ids. */
export function sessionsOf(accountId) {
  const out = [];
  for (const [id, entry] of table('Session')) {
    if (live(entry) && entry.payload.accountId === accountId) out.push({ id, payload: entry.payload });
  }
  return out;
}

/** Deletes a session and every token and grant issued under its grants. */
export function destroySession(id, payload) {
  table('Session').delete(id);
  for (const { grantId } of Object.values(payload.authorizations || {})) {
    if (!grantId) continue;
    table('Grant').delete(grantId);
    for (const rows of models.values()) {
      for (const [rowId, entry] of rows) {
        if (entry.payload.grantId === grantId) rows.delete(rowId);
      }
    }
  }
}
