-- SPDX-License-Identifier: LGPL-2.1-or-later
-- The lua5.4 workload of record.sh: a garbage-collected heap. A table of
-- 60,000 records is updated in rounds while each round builds and drops
-- 20,000 short-lived objects, so the incremental collector marks the live
-- records and sweeps the dead ones again and again; then a sort.
-- Deterministic (no math.random, no clock).
local recs = {}
for i = 1, 60000 do
	recs[i] = { id = i, name = "r" .. (i * 7919 % 100003), v = i % 97 }
end
for round = 1, 20 do
	for i = 1, #recs, 7 do
		local r = recs[(i * round * 31) % #recs + 1]
		r.v = r.v + round
		r.tag = r.name .. "/" .. round
	end
	local tmp = {}
	for i = 1, 20000 do
		tmp[i] = { i, tostring(i * round) }
	end
end
table.sort(recs, function(a, b)
	if a.v ~= b.v then
		return a.v > b.v
	end
	return a.id < b.id
end)
print(recs[1].id, recs[#recs].id, math.floor(collectgarbage("count")))
