-- provisioned_category_ids: categories whose stock was created in Redis, by id.
SELECT id FROM ticket_categories WHERE stock_provisioned_at IS NOT NULL ORDER BY id
