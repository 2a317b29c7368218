/* SPDX-License-Identifier: MIT */
/*
 * The uplink: takes samples from the store, packs them into publishes as
 * the cloud profile says, sends them over the MQTT transport with QoS 1 and
 * acknowledges them to the store only on PUBACK.  Store events (drop
 * reports, resets) go out the same way.
 */
#ifndef EB_CLOUD_H
#define EB_CLOUD_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>

#include "../common/report.h"
#include "../common/util.h"
#include "../config/config.h"
#include "../daemon/loop.h"
#include "../store/store.h"

struct cloud;

struct cloud_stats {
	bool connected;
	uint64_t connects;
	uint64_t publishes;	/* measurement publishes sent */
	uint64_t samples_sent;	/* samples in them (incl. re-sends) */
	uint64_t samples_acked; /* acknowledged by the broker */
	uint64_t quarantined;	/* samples that could not be formatted */
	uint64_t events;	/* events published (drop reports...) */
	unsigned inflight;	/* publishes awaiting PUBACK */
};

struct cloud *cloud_new(struct loop *loop, const struct eb_config *cfg,
			SSL_CTX *tls, struct store *st, const char *version,
			eb_report_fn report, struct eb_err *err);
struct cloud *cloud_free(struct cloud *c);

/* Called after the broker acknowledged samples (space freed in the store). */
void cloud_on_acked(struct cloud *c, void (*fn)(void *ud), void *ud);

void cloud_start(struct cloud *c);
/* New samples are waiting: publish what the window allows. */
void cloud_kick(struct cloud *c);
/* Nothing in flight. */
bool cloud_idle(const struct cloud *c);
void cloud_stop(struct cloud *c);
void cloud_get_stats(const struct cloud *c, struct cloud_stats *st);

#endif
