/* SPDX-License-Identifier: MIT */
/*
 * The pulse counter's persistent total, apart from libgpiod so that its
 * restart behaviour is unit-tested: the count lives in a state file under
 * gateway.state_dir, replaced atomically (eb_write_file), and is always
 * saved *before* a total is reported, so what the cloud has seen is never
 * more than what a restart starts from.
 */
#ifndef EB_GPIO_COUNTER_H
#define EB_GPIO_COUNTER_H

#include <stdint.h>

#include "../common/util.h"

struct counter {
	char *path;	    /* the state file */
	uint64_t pulses;    /* since counting began, across restarts */
	uint64_t at_report; /* pulses at the last report */
	uint64_t report_ms; /* eb_now_ms() of the last report (or start) */
};

/* Loads the saved count (a missing file: 0, the first start; a garbled
 * one: -EBADMSG, never a silent restart from 0). */
int counter_open(struct counter *c, const char *path, uint64_t now_ms,
		 struct eb_err *err);
void counter_add(struct counter *c, uint64_t pulses);
/* Saves the count, then gives the total (pulses / scale) and the rate
 * since the last report (units per second).  Nothing is given when the
 * save failed (-errno): the pulses stay counted for the next try. */
int counter_report(struct counter *c, uint64_t now_ms, double scale,
		   double *total, double *rate, struct eb_err *err);
/* Saves the count (a clean stop loses nothing) and frees. */
int counter_close(struct counter *c, struct eb_err *err);

#endif
