-- A whole phone number or e-mail typed into search is found through the trigram search
-- index, which holds every lead's phone forms and e-mail, and then matched exactly against
-- the lead's own column (see `Store::leads`). The two indexes of their own cost every new
-- lead two inserts at random places. Where pg_trgm is missing (no trigram index, see 0006)
-- they stay, so that such a search is not a scan of every lead.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_indexes WHERE schemaname = current_schema() AND indexname = 'leads_search_trgm') THEN
        DROP INDEX leads_phone;
        DROP INDEX leads_email;
    END IF;
END
$$;
