-- Lead lists sorted by priority or score walk these indexes, lead_id being the tie-breaker:
-- a page costs its 50 rows, not a sort of every lead.
DROP INDEX lead_scores_priority;
CREATE INDEX lead_scores_priority ON lead_scores (priority, lead_id);
CREATE INDEX lead_scores_score ON lead_scores (score, lead_id);

-- A whole phone number or e-mail typed into search is matched exactly.
CREATE INDEX leads_phone ON leads (phone) WHERE phone IS NOT NULL;
CREATE INDEX leads_email ON leads (email) WHERE email IS NOT NULL;

-- Search by any part of a name, company or e-mail: a trigram index serves `search LIKE
-- '%…%'`. pg_trgm ships with PostgreSQL (contrib) and is a trusted extension; where it is
-- missing, search still works by scanning.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm') THEN
        CREATE EXTENSION IF NOT EXISTS pg_trgm;
        CREATE INDEX leads_search_trgm ON leads USING gin (search gin_trgm_ops);
    END IF;
END
$$;
