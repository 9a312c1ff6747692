-- SPDX-License-Identifier: LGPL-2.1-or-later
-- The sqlite3 workload of record.sh: two tables, an index, joins, an update
-- and a delete. Deterministic: no random().
CREATE TABLE item(id INTEGER PRIMARY KEY, cat INTEGER, name TEXT, price REAL);
WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 40000)
INSERT INTO item SELECT x, (x * 7919) % 97, 'item-' || ((x * 104729) % 100003), ((x * 31337) % 10007) / 10.0 FROM n;
CREATE INDEX item_name ON item(name);
CREATE TABLE sale(id INTEGER PRIMARY KEY, item INTEGER, qty INTEGER);
WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 60000)
INSERT INTO sale SELECT x, 1 + (x * 48611) % 40000, 1 + x % 9 FROM n;
SELECT cat, count(*), sum(price) FROM item GROUP BY cat ORDER BY 3 DESC LIMIT 5;
SELECT i.cat, sum(s.qty * i.price) AS rev FROM sale s JOIN item i ON i.id = s.item GROUP BY i.cat ORDER BY rev DESC LIMIT 5;
SELECT count(*) FROM item WHERE name BETWEEN 'item-2' AND 'item-5';
UPDATE item SET price = price * 1.1 WHERE cat % 3 = 0;
DELETE FROM sale WHERE qty = 5;
SELECT count(*), sum(qty) FROM sale;
