-- Lead lists sorted by score walk this index (lead_id, the primary key, is its tie-breaker),
-- as the priority sort walks lead_scores_priority: a page costs its 50 rows, not a sort of
-- every lead.
CREATE INDEX lead_scores_score ON lead_scores (score);

-- A whole phone number or e-mail typed into search is matched exactly.
CREATE INDEX leads_phone ON leads (phone) WHERE phone IS NOT NULL;
CREATE INDEX leads_email ON leads (email) WHERE email IS NOT NULL;
