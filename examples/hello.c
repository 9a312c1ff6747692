/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The README's example: a 1 TiB guest on a 64 MiB budget. */
#include <stdio.h>
#include <umlmem.h>

int main(void)
{
	struct umlmem_host_config hc;
	struct umlmem_guest_config gc;
	umlmem_host *host;
	umlmem_guest *vm;
	char buf[6];
	int rc;

	umlmem_host_config_init(&hc);
	hc.resident_bytes = 64 << 20;            /* 64 MiB of real memory */
	if ((rc = umlmem_host_create(&hc, &host)))
		return fprintf(stderr, "%s: %s\n", umlmem_strerror(rc), umlmem_errmsg()), 1;

	umlmem_guest_config_init(&gc);
	gc.ram_bytes = 1ull << 40;               /* a 1 TiB guest */
	gc.name = "vm0";
	if ((rc = umlmem_guest_create(host, &gc, &vm)))
		return fprintf(stderr, "%s: %s\n", umlmem_strerror(rc), umlmem_errmsg()), 1;

	if ((rc = umlmem_write(vm, 0xfff0000000, "hello", 6)) ||
	    (rc = umlmem_read(vm, 0xfff0000000, buf, 6)))
		return fprintf(stderr, "%s: %s\n", umlmem_strerror(rc), umlmem_errmsg()), 1;
	puts(buf);

	umlmem_host_destroy(host);               /* destroys the guest, removes swap */
	return 0;
}
