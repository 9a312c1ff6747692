/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The C file record.sh has cc1 compile: a hash table, a sort, a parser. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct entry { char *key; int value; struct entry *next; };
struct table { struct entry **slot; size_t n, cap; };

static unsigned long hash(const char *s)
{
	unsigned long h = 5381;
	while (*s)
		h = h * 33 + (unsigned char)*s++;
	return h;
}

static int table_put(struct table *t, const char *key, int value)
{
	unsigned long h = hash(key) % t->cap;
	struct entry *e;

	for (e = t->slot[h]; e; e = e->next)
		if (!strcmp(e->key, key)) {
			e->value = value;
			return 0;
		}
	e = malloc(sizeof(*e));
	if (!e)
		return -1;
	e->key = strdup(key);
	e->value = value;
	e->next = t->slot[h];
	t->slot[h] = e;
	t->n++;
	return 0;
}

static int cmp_int(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;
	return (x > y) - (x < y);
}

static int parse_line(const char *s, char *key, size_t klen, int *value)
{
	size_t i = 0;

	while (*s == ' ')
		s++;
	while (*s && *s != '=' && i + 1 < klen)
		key[i++] = *s++;
	key[i] = '\0';
	if (*s++ != '=')
		return -1;
	*value = (int)strtol(s, NULL, 10);
	return 0;
}

int main(int argc, char **argv)
{
	struct table t = { calloc(1024, sizeof(struct entry *)), 0, 1024 };
	char line[256], key[128];
	int values[4096], nv = 0, v, i;
	FILE *f = argc > 1 ? fopen(argv[1], "r") : stdin;

	if (!f || !t.slot)
		return 1;
	while (fgets(line, sizeof(line), f)) {
		if (parse_line(line, key, sizeof(key), &v))
			continue;
		table_put(&t, key, v);
		if (nv < 4096)
			values[nv++] = v;
	}
	qsort(values, (size_t)nv, sizeof(values[0]), cmp_int);
	for (i = 0; i < nv; i += nv / 10 + 1)
		printf("%d\n", values[i]);
	printf("%zu keys\n", t.n);
	return 0;
}
