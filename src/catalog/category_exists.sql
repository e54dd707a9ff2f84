-- category_exists: whether $1 names a ticket category.
SELECT EXISTS (SELECT 1 FROM ticket_categories WHERE id = $1)
