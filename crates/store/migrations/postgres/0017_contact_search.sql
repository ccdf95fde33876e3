-- A whole phone number or e-mail typed into search is found through the trigram search
-- index, which holds every lead's phone forms and e-mail, and then matched exactly against
-- the lead's own column (see `Store::leads`). The two indexes of their own cost every new
-- lead two inserts at random places: on SQLite about a seventh of a 1 M-row import's time.
DROP INDEX leads_phone;
DROP INDEX leads_email;
