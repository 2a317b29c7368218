/* SPDX-License-Identifier: MIT */
/*
 * store_growth: does the durable queue get slower as it grows?
 * (bench/store_forward.py runs it; the figures are ratios to the smallest
 * size, measured in the same process.)
 *
 * For each size N, on a fresh queue file, through store/store.h exactly as
 * the daemon uses it:
 *   fill   store_push() N samples, store_flush() after every BATCH of them
 *          (the daemon commits once per loop round);
 *   open   store_close() + store_open() of the full queue (a restart with a
 *          backlog: quick_check, count);
 *   drain  store_connected(), then store_next() up to ROWS rows (one
 *          publish), store_lease(), store_ack(), and store_flush() every
 *          ACKS_PER_FLUSH publishes, until store_next() returns nothing.
 * Rates are rows per second of wall time and rows per second of this
 * process's CPU time (what neighbours on a shared machine hardly change).
 * Every row read back must be the next value in order (value = index), the
 * stats must say N stored after the fill and 0 stored / N acknowledged
 * after the drain; anything else is a broken store (exit 1).
 *
 *   store_growth DIR [-b BATCH] [-r ROWS] [-a ACKS_PER_FLUSH] [-w WINDOW]
 *                    [-m MIN_ROWS] [-f] N...
 *
 * -f: synchronous=FULL.  The "at size" rates are those of the last W rows
 * of the fill (inserted into a queue already holding N - W) and of the
 * first W rows of the drain (read from a queue holding N), W = the larger
 * of WINDOW (default 10000) and N / 10, at most N: long enough to include
 * the WAL checkpoints a steady fill goes through.  MIN_ROWS (default 0): a size is filled and drained
 * again until at least MIN_ROWS rows went through, and each figure is the
 * median over those repetitions (a 10k fill takes ~30 ms: one run is
 * noise).  One line per size:
 *   store_growth rows=N reps=K insert_s=S insert_rate=R insert_at_size_rate=R
 *     open_s=S drain_s=S drain_rate=R drain_at_size_rate=R db_kib=K
 *     rss_full_kib=K rss_empty_kib=K insert_cpu_rate=R drain_cpu_rate=R
 *   (rss_*: VmRSS with the queue full / drained; reps: repetitions)
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../common/sample.h"
#include "../store/store.h"

#define MAX_ROWS 4096

static struct store_row rows[MAX_ROWS];

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU time of this process: neighbours on a shared machine hardly move it. */
static double cpu_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void report(enum eb_log_level level, const char *subsys, const char *fmt,
		   ...)
{
	va_list ap;

	fprintf(stderr, "store_growth: %d: %s: ", (int)level, subsys);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static long rss_kib(void)
{
	char line[256];
	long v = -1;
	FILE *f = fopen("/proc/self/status", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, "VmRSS:", 6) == 0) {
			v = strtol(line + 6, NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

static void unlink_db(const char *path)
{
	static const char *const sfx[] = { "", "-wal", "-shm" };
	char p[4300];

	for (size_t i = 0; i < sizeof(sfx) / sizeof(sfx[0]); i++) {
		snprintf(p, sizeof(p), "%s%s", path, sfx[i]);
		unlink(p);
	}
}

static long file_kib(const char *path)
{
	struct stat sb;
	long k = 0;
	char p[4300];

	if (stat(path, &sb) == 0)
		k += (long)(sb.st_size / 1024);
	snprintf(p, sizeof(p), "%s-wal", path);
	if (stat(p, &sb) == 0)
		k += (long)(sb.st_size / 1024);
	return k;
}

static int fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "store_growth: BROKEN: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

enum {
	F_INSERT_S,
	F_INSERT_RATE,
	F_INSERT_AT,
	F_OPEN_S,
	F_DRAIN_S,
	F_DRAIN_RATE,
	F_DRAIN_AT,
	F_DB_KIB,
	F_RSS_FULL,
	F_RSS_EMPTY,
	F_INSERT_CPU_RATE,
	F_DRAIN_CPU_RATE,
	N_FIG
};

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double median_of(double *v, long n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int run_size(const char *dir, long n, long batch, long nrows,
		    long acks_per_flush, long window, int sync_full,
		    struct sensor_meta *meta, double *fig)
{
	char path[4200];
	struct store_opts o = { 0 };
	struct eb_err err = { "" };
	struct store_stats ss;
	struct store *st;
	double t0, t1, tw = 0, t_open0, t_open1, d0, d1, dw = 0;
	double c0, c1, dc0, dc1;
	long k, next = 0, got = 0, pubs = 0, rss_full, rss_empty, db_kib;
	long win = window > n / 10 ? window : n / 10;
	int r;

	if (win > n)
		win = n;
	snprintf(path, sizeof(path), "%s/growth-%ld.db", dir, n);
	unlink_db(path);
	o.path = path;
	o.max_size = 1ULL << 40;
	o.sync_full = sync_full;
	o.ram_samples = (size_t)batch;
	o.report = report;
	st = store_open(&o, &err);
	if (!st)
		return fail("store_open %s: %s", path, err.msg);

	/* fill */
	c0 = cpu_s();
	t0 = now_s();
	for (k = 0; k < n;) {
		long end = k + batch < n ? k + batch : n;

		if (k >= n - win && tw == 0)
			tw = now_s();
		for (; k < end; k++) {
			struct eb_sample s = { .meta = meta,
					       .value = (double)k,
					       .time_ms = eb_realtime_ms() };

			store_push(st, &s);
		}
		r = store_flush(st);
		if (r < 0)
			return fail("store_flush during the fill: %s",
				    strerror(-r));
	}
	t1 = now_s();
	c1 = cpu_s();
	if (tw == 0)
		tw = t0;
	store_get_stats(st, &ss);
	if ((long)ss.stored != n || ss.inbox || ss.dropped)
		return fail("after filling %ld: %llu stored, %llu in RAM, "
			    "%llu dropped",
			    n, (unsigned long long)ss.stored,
			    (unsigned long long)ss.inbox,
			    (unsigned long long)ss.dropped);
	rss_full = rss_kib();

	/* a restart with the backlog */
	t_open0 = now_s();
	st = store_close(st);
	st = store_open(&o, &err);
	t_open1 = now_s();
	if (!st)
		return fail("re-open %s: %s", path, err.msg);
	db_kib = file_kib(path);

	/* drain */
	dc0 = cpu_s();
	d0 = now_s();
	store_connected(st);
	for (;;) {
		struct store_lease l;
		size_t got_now = store_next(st, rows, (size_t)nrows);

		if (!got_now)
			break;
		for (size_t i = 0; i < got_now; i++, next++)
			if (rows[i].s.value != (double)next)
				return fail("drain of %ld: row %ld has value "
					    "%.17g",
					    n, next, rows[i].s.value);
		store_lease(st, rows, got_now, &l);
		store_ack(st, &l);
		got += (long)got_now;
		if (++pubs % acks_per_flush == 0) {
			r = store_flush(st);
			if (r < 0)
				return fail("store_flush during the drain: "
					    "%s",
					    strerror(-r));
		}
		if (dw == 0 && got >= win)
			dw = now_s();
	}
	r = store_flush(st);
	if (r < 0)
		return fail("last store_flush of the drain: %s", strerror(-r));
	d1 = now_s();
	dc1 = cpu_s();
	if (dw == 0)
		dw = d1;
	store_get_stats(st, &ss);
	if (got != n || ss.stored || (long)ss.acked != n)
		return fail("drain of %ld: read %ld rows; then %llu stored, "
			    "%llu acknowledged",
			    n, got, (unsigned long long)ss.stored,
			    (unsigned long long)ss.acked);
	rss_empty = rss_kib();
	st = store_close(st);
	unlink_db(path);

	fig[F_INSERT_S] = t1 - t0;
	fig[F_INSERT_RATE] = (double)n / (t1 - t0);
	fig[F_INSERT_AT] = (double)win / (t1 - tw > 0 ? t1 - tw : 1e-9);
	fig[F_OPEN_S] = t_open1 - t_open0;
	fig[F_DRAIN_S] = d1 - d0;
	fig[F_DRAIN_RATE] = (double)n / (d1 - d0);
	fig[F_DRAIN_AT] = (double)win / (dw - d0 > 0 ? dw - d0 : 1e-9);
	fig[F_DB_KIB] = (double)db_kib;
	fig[F_RSS_FULL] = (double)rss_full;
	fig[F_RSS_EMPTY] = (double)rss_empty;
	fig[F_INSERT_CPU_RATE] = (double)n / (c1 - c0 > 0 ? c1 - c0 : 1e-9);
	fig[F_DRAIN_CPU_RATE] = (double)n / (dc1 - dc0 > 0 ? dc1 - dc0 : 1e-9);
	return 0;
}

static int run_sizes(const char *dir, long n, long reps, long batch, long nrows,
		     long acks_per_flush, long window, int sync_full,
		     struct sensor_meta *meta)
{
	double(*fig)[N_FIG] = calloc((size_t)reps, sizeof(*fig));
	double med[N_FIG], col[64];
	int rc = 0;

	if (!fig)
		return fail("out of memory");
	for (long r = 0; r < reps && rc == 0; r++)
		rc = run_size(dir, n, batch, nrows, acks_per_flush, window,
			      sync_full, meta, fig[r]);
	if (rc == 0) {
		for (int f = 0; f < N_FIG; f++) {
			for (long r = 0; r < reps; r++)
				col[r] = fig[r][f];
			med[f] = median_of(col, reps);
		}
		printf("store_growth rows=%ld reps=%ld insert_s=%.4f "
		       "insert_rate=%.1f insert_at_size_rate=%.1f open_s=%.4f "
		       "drain_s=%.4f drain_rate=%.1f drain_at_size_rate=%.1f "
		       "db_kib=%.0f rss_full_kib=%.0f rss_empty_kib=%.0f "
		       "insert_cpu_rate=%.1f drain_cpu_rate=%.1f\n",
		       n, reps, med[F_INSERT_S], med[F_INSERT_RATE],
		       med[F_INSERT_AT], med[F_OPEN_S], med[F_DRAIN_S],
		       med[F_DRAIN_RATE], med[F_DRAIN_AT], med[F_DB_KIB],
		       med[F_RSS_FULL], med[F_RSS_EMPTY],
		       med[F_INSERT_CPU_RATE], med[F_DRAIN_CPU_RATE]);
		fflush(stdout);
	}
	free(fig);
	return rc;
}

int main(int argc, char **argv)
{
	long batch = 1000, nrows = 256, acks = 4, window = 10000, min_rows = 0;
	int sync_full = 0, c, rc = 0;
	struct sensor_meta *meta;
	const char *dir;

	while ((c = getopt(argc, argv, "b:r:a:w:m:f")) != -1) {
		switch (c) {
		case 'b':
			batch = strtol(optarg, NULL, 10);
			break;
		case 'r':
			nrows = strtol(optarg, NULL, 10);
			break;
		case 'a':
			acks = strtol(optarg, NULL, 10);
			break;
		case 'w':
			window = strtol(optarg, NULL, 10);
			break;
		case 'm':
			min_rows = strtol(optarg, NULL, 10);
			break;
		case 'f':
			sync_full = 1;
			break;
		default:
			return 2;
		}
	}
	if (optind + 2 > argc || batch <= 0 || nrows <= 0 || nrows > MAX_ROWS ||
	    acks <= 0 || window <= 0) {
		fprintf(stderr,
			"usage: %s DIR [-b BATCH] [-r ROWS<=%d] [-a "
			"ACKS_PER_FLUSH] [-w WINDOW] [-m MIN_ROWS] [-f] N...\n",
			argv[0], MAX_ROWS);
		return 2;
	}
	dir = argv[optind++];
	meta = sensor_meta_new("growth", "c8y_Counter", "growth", "n");
	if (!meta)
		return fail("out of memory");
	for (; optind < argc && rc == 0; optind++) {
		long n = strtol(argv[optind], NULL, 10);
		long reps;

		if (n <= 0)
			return fail("bad size %s", argv[optind]);
		reps = min_rows > n ? (min_rows + n - 1) / n : 1;
		if (reps > 64)
			reps = 64;
		rc = run_sizes(dir, n, reps, batch, nrows, acks, window,
			       sync_full, meta);
	}
	sensor_meta_unref(meta);
	return rc;
}
