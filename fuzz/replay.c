/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * replay.c: runs LLVMFuzzerTestOneInput over files, for builds without
 * libFuzzer (gcc, valgrind). Each argument is a file or a directory, whose
 * regular files are run in name order (names starting with '.' skipped), so
 * the seed corpus and every input that once failed are regression tests.
 *
 *   build/fuzz_replay fuzz/corpus fuzz/regress
 *
 * Each input runs in a child process, so that one failure (the harness
 * prints what failed and aborts) does not hide the others; the names of
 * the inputs that failed are listed at the end, and the exit status is 1 if
 * there was one. FUZZ_REPLAY_NOFORK=1 runs them in this process instead
 * (for a debugger), stopping at the first failure.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *current;

static void on_abort(int sig)
{
	static const char pre[] = "\nfuzz_replay: input that failed: ";
	ssize_t w;

	if (current) {
		w = write(2, pre, sizeof(pre) - 1);
		w = write(2, current, strlen(current));
		w = write(2, "\n", 1);
		(void)w;
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

static int nofork, failed_n;
static char failed[16][256];

/* 0 passed, 1 failed, -1 could not be read. */
static int run_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *data = NULL;
	size_t len = 0, cap = 0, n;
	pid_t pid;
	int st;

	if (!f) {
		fprintf(stderr, "fuzz_replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	for (;;) {
		if (len == cap) {
			uint8_t *p = realloc(data, cap ? 2 * cap : 4096);

			if (!p) {
				fprintf(stderr, "fuzz_replay: %s: out of memory\n", path);
				free(data);
				fclose(f);
				return -1;
			}
			data = p;
			cap = cap ? 2 * cap : 4096;
		}
		n = fread(data + len, 1, cap - len, f);
		len += n;
		if (n == 0)
			break;
	}
	fclose(f);
	current = path;
	if (nofork) {
		LLVMFuzzerTestOneInput(data, len);
		current = NULL;
		free(data);
		return 0;
	}
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		LLVMFuzzerTestOneInput(data, len);
		free(data);
		fflush(NULL);
		_exit(0);
	}
	free(data);
	current = NULL;
	if (pid < 0 || waitpid(pid, &st, 0) != pid) {
		fprintf(stderr, "fuzz_replay: %s: cannot run it: %s\n", path, strerror(errno));
		return -1;
	}
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return 0;
	if (failed_n < 16)
		snprintf(failed[failed_n], sizeof(failed[0]), "%s (%s %d)", path,
			 WIFSIGNALED(st) ? "signal" : "exit status",
			 WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
	failed_n++;
	return 1;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs every regular file of @dir in name order, counting into @pass and
   @fail; -1 when the directory cannot be read. */
static int run_dir(const char *dir, int *pass, int *fail)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char **names = NULL;
	size_t n = 0, cap = 0;

	if (!d) {
		fprintf(stderr, "fuzz_replay: %s: %s\n", dir, strerror(errno));
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (n == cap) {
			char **p = realloc(names, (cap ? 2 * cap : 64) * sizeof(*names));

			if (!p)
				break;
			names = p;
			cap = cap ? 2 * cap : 64;
		}
		names[n] = strdup(de->d_name);
		if (names[n])
			n++;
	}
	closedir(d);
	if (n)
		qsort(names, n, sizeof(*names), cmp_names);
	for (size_t i = 0; i < n; i++) {
		char path[4096];
		struct stat st;

		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
			if (run_file(path) == 0)
				(*pass)++;
			else
				(*fail)++;
		}
		free(names[i]);
	}
	free(names);
	return 0;
}

int main(int argc, char **argv)
{
	struct timespec t0, t1;
	int pass = 0, fail = 0;
	const char *nf = getenv("FUZZ_REPLAY_NOFORK");

	if (argc < 2) {
		fprintf(stderr, "usage: %s DIR|FILE...\n"
			"runs the fuzz harness once over each file (of each directory)\n", argv[0]);
		return 2;
	}
	nofork = nf && *nf && strcmp(nf, "0");
	/* the native touches that may raise SIGBUS are too slow for the
	   fuzzer, not for a replay of a few inputs */
	setenv("FUZZ_MODEL_SIGBUS", "1", 0);
	signal(SIGABRT, on_abort);
	signal(SIGSEGV, on_abort);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 1; i < argc; i++) {
		struct stat st;

		if (stat(argv[i], &st) != 0) {
			fprintf(stderr, "fuzz_replay: %s: %s\n", argv[i], strerror(errno));
			fail++;
		} else if (S_ISDIR(st.st_mode)) {
			if (run_dir(argv[i], &pass, &fail) < 0)
				fail++;
		} else if (run_file(argv[i]) == 0) {
			pass++;
		} else {
			fail++;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	for (int i = 0; i < failed_n && i < 16; i++)
		printf("fuzz_replay: FAILED: %s\n", failed[i]);
	printf("fuzz_replay: %d inputs in %.2f s\n", pass + fail,
	       (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	printf("fuzz_replay: %d passed, %d failed\n", pass, fail);
	return fail ? 1 : 0;
}
