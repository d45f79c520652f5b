-- Resources: one row per (type, id); the current version only. Deleted
-- resources keep their row (deleted = true) so reads can answer "gone".
CREATE TABLE resources (
    type         TEXT        NOT NULL,
    id           TEXT        NOT NULL,
    project      TEXT        NOT NULL,
    version      BIGINT      NOT NULL,
    last_updated TIMESTAMPTZ NOT NULL,
    deleted      BOOLEAN     NOT NULL DEFAULT FALSE,
    body         JSONB       NOT NULL,
    PRIMARY KEY (type, id)
);

CREATE INDEX resources_by_project ON resources (type, project, last_updated, id);

-- Identifier tokens of Patient, Practitioner and RelatedPerson. system is NULL
-- when the identifier has none (matched by "|value"); value is NULL when absent.
CREATE TABLE identifier_index (
    type    TEXT NOT NULL,
    id      TEXT NOT NULL,
    project TEXT NOT NULL,
    system  TEXT,
    value   TEXT,
    FOREIGN KEY (type, id) REFERENCES resources (type, id) ON DELETE CASCADE
);

CREATE INDEX identifier_index_value ON identifier_index (type, value, system);
CREATE INDEX identifier_index_system ON identifier_index (type, system);
CREATE INDEX identifier_index_resource ON identifier_index (type, id);

-- Lower-cased name parts (family, each given, text) of the profile types.
-- COLLATE "C" makes the prefix LIKE indexable whatever the database locale.
CREATE TABLE name_index (
    type    TEXT NOT NULL,
    id      TEXT NOT NULL,
    project TEXT NOT NULL,
    part    TEXT COLLATE "C" NOT NULL,
    FOREIGN KEY (type, id) REFERENCES resources (type, id) ON DELETE CASCADE
);

CREATE INDEX name_index_part ON name_index (type, part);
CREATE INDEX name_index_resource ON name_index (type, id);

-- ProjectMembership search columns and the per-project externalId rule.
CREATE TABLE memberships (
    id          TEXT    NOT NULL PRIMARY KEY,
    project     TEXT    NOT NULL,
    profile     TEXT    NOT NULL,
    external_id TEXT,
    active      BOOLEAN NOT NULL,
    admin       BOOLEAN NOT NULL
);

CREATE UNIQUE INDEX memberships_project_external_id
    ON memberships (project, external_id) WHERE external_id IS NOT NULL;
CREATE INDEX memberships_external_id ON memberships (external_id) WHERE external_id IS NOT NULL;
CREATE INDEX memberships_profile ON memberships (profile);

-- Login search column.
CREATE TABLE logins (
    id         TEXT NOT NULL PRIMARY KEY,
    project    TEXT NOT NULL,
    membership TEXT NOT NULL
);

CREATE INDEX logins_membership ON logins (membership);
