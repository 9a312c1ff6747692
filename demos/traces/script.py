# SPDX-License-Identifier: LGPL-2.1-or-later
# The python3 workload of record.sh: dictionaries, sorting, string building,
# a little arithmetic. Deterministic.
import collections
words = {}
for i in range(60000):
    k = 'w%d' % ((i * 7919) % 20011)
    words[k] = words.get(k, 0) + i
top = sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
text = ' '.join('%s=%d' % kv for kv in top)
counts = collections.Counter(c for c in text * 50)
primes = [n for n in range(2, 20000) if all(n % p for p in range(2, int(n ** 0.5) + 1))]
print(len(words), len(primes), counts.most_common(3))
