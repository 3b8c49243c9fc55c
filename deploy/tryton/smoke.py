#!/usr/bin/env python3
"""Check a server provisioned by setup.sh over JSON-RPC only (stdlib).

    set -a; eval "$(bash deploy/tryton/setup.sh)"; set +a
    python3 deploy/tryton/smoke.py

Reads TRYTON_URL, TRYTON_DB, TRYTON_USER, TRYTON_PASSWORD_FILE. Checks the
demo catalogue, the stock per warehouse and the customers, then creates,
quotes and confirms a one-line sale (so it changes the database: restore
the golden snapshot with setup.sh afterwards if that matters). Exit 0 when
every check passes.
"""
import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request

URL = os.environ.get('TRYTON_URL', 'http://127.0.0.1:8765')
DB = os.environ.get('TRYTON_DB', 'erp')
USER = os.environ.get('TRYTON_USER', 'admin')
PASSWORD_FILE = os.environ.get('TRYTON_PASSWORD_FILE')


class RPC:
    def __init__(self):
        self.url = '%s/%s/rpc/' % (URL, DB)
        self.auth = None
        if not PASSWORD_FILE:
            sys.exit('TRYTON_PASSWORD_FILE is not set (export what setup.sh'
                ' prints)')
        with open(PASSWORD_FILE) as f:
            password = f.read().strip()
        uid, token = self.raw('common.db.login',
            [USER, {'password': password}, 'en'])[:2]
        self.auth = 'Session ' + base64.b64encode(
            ('%s:%s:%s' % (USER, uid, token)).encode()).decode()
        self.context = self.raw('model.res.user.get_preferences', [True, {}])

    def raw(self, method, params):
        body = json.dumps({'id': 1, 'method': method, 'params': params})
        headers = {'Content-Type': 'application/json'}
        if self.auth:
            headers['Authorization'] = self.auth
        req = urllib.request.Request(self.url, body.encode(), headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                # bodies over 1400 bytes claim gzip but are plain JSON
                out = json.loads(resp.read())
        except urllib.error.HTTPError as e:
            sys.exit('%s: HTTP %s' % (method, e.code))
        if 'error' in out:
            sys.exit('%s: %s' % (method, json.dumps(out['error'])[:500]))
        return out['result']

    def __call__(self, model, method, *args, context=None):
        ctx = dict(self.context, **(context or {}))
        return self.raw('model.%s.%s' % (model, method), [*args, ctx])

    def search_read(self, model, domain, fields, context=None):
        return self(model, 'search_read', domain, 0, None, None, fields,
            context=context)


def dec(value):
    if isinstance(value, dict):
        return value['decimal']
    return str(value)


def check(cond, what):
    print('%s %s' % ('ok  ' if cond else 'FAIL', what))
    if not cond:
        sys.exit(1)


def main():
    t0 = time.monotonic()
    c = RPC()
    check(c.context.get('company'), 'context carries a company')

    p, = c.search_read('product.product', [['code', '=', 'WIDGET-1']],
        ['code', 'name', 'description', 'list_price', 'list_price_used'])
    check(dec(p['list_price']) == dec(p['list_price_used']) == '12.50'
        and p['name'] == 'Widget',
        'WIDGET-1 found by code: %s, %s EUR' % (p['name'],
            dec(p['list_price'])))
    n = c('product.product', 'search_count', [['code', '!=', None]])
    check(n == 24, '%d products with a code' % n)

    whs = c.search_read('stock.location', [['type', '=', 'warehouse']],
        ['code', 'name', 'storage_location', 'storage_location.code'])
    wh = {w['code']: w for w in whs}
    check(sorted(wh) == ['WH-NORTH', 'WH-SOUTH'], 'warehouses %s' % sorted(wh))
    expected = {('WH-NORTH', 'WIDGET-1'): 5, ('WH-SOUTH', 'WIDGET-1'): 0,
        ('WH-NORTH', 'DRILL-18'): 15, ('WH-SOUTH', 'DRILL-18'): 80,
        ('WH-NORTH', 'SAW-CIRC'): 0, ('WH-SOUTH', 'SAW-CIRC'): 43,
        ('WH-NORTH', 'LADDER-3'): 0, ('WH-SOUTH', 'TAPE-5M'): 1}
    skus = sorted({s for _, s in expected})
    for code, w in sorted(wh.items()):
        rows = c.search_read('product.product', [['code', 'in', skus]],
            ['code', 'quantity', 'forecast_quantity'],
            context={'locations': [w['id']]})
        got = {r['code']: r['quantity'] for r in rows}
        for (wcode, sku), qty in expected.items():
            if wcode == code:
                check(got.get(sku) == qty, '%s %s quantity %s == %s'
                    % (code, sku, got.get(sku), qty))

    party, = c.search_read('party.party', [['code', '=', 'ACME-001']],
        ['name', 'code', 'addresses', 'customer_payment_term',
            'account_receivable', 'credit_limit_amount'])
    check(party['name'] == 'ACME Retail GmbH', 'party ACME-001 found by code')
    mech, = c.search_read('party.contact_mechanism',
        [['type', '=', 'email'], ['value', '=', 'alice@example.com']],
        ['party', 'party.name'])
    check(mech['party.']['name'] == 'Alice Example',
        'party found by email (alice@example.com)')

    if 'credit_limit_amount' in party:
        check(dec(party['credit_limit_amount']) == '5000.00',
            'ACME-001 credit limit %s' % dec(party['credit_limit_amount']))
    alice, = c('party.party', 'read', [mech['party']],
        ['addresses', 'customer_payment_term'])
    unit, = c('product.uom', 'search', [['name', '=', 'Unit']], 0, None, None)

    def sell(party, warehouse, ref):
        sale, = c('sale.sale', 'create', [{
            'party': party['id'], 'invoice_address': party['addresses'][0],
            'shipment_address': party['addresses'][0],
            'payment_term': party['customer_payment_term'],
            'warehouse': warehouse, 'reference': ref,
            'lines': [['create', [{'type': 'line', 'product': p['id'],
                'quantity': 3.0, 'unit': unit,
                'unit_price': {'__class__': 'Decimal', 'decimal': '12.50'}}]]],
            }])
        c('sale.sale', 'quote', [sale])
        c('sale.sale', 'confirm', [sale])
        s, = c('sale.sale', 'read', [sale], ['number', 'state',
                'total_amount', 'invoices', 'shipments'])
        check(s['state'] == 'processing' and dec(s['total_amount']) == '37.50',
            'sale %s (%s) %s total %s, %d invoice(s), %d shipment(s)' % (
                s['number'], ref, s['state'], dec(s['total_amount']),
                len(s['invoices']), len(s['shipments'])))

    sell(party, wh['WH-NORTH']['id'], 'SMOKE-ACME')
    sell(alice, wh['WH-NORTH']['id'], 'SMOKE-ALICE')
    print('smoke OK in %.2fs' % (time.monotonic() - t0))


if __name__ == '__main__':
    main()
