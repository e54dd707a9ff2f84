-- mark_provisioned: the category's stock exists in Redis (pending); $1 category id.
UPDATE ticket_categories SET stock_provisioned_at = now() WHERE id = $1 AND stock_provisioned_at IS NULL
