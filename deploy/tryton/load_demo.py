#!/usr/bin/env python3
"""Load the embedded reference ERP's demo data into a Tryton database.

    TRYTOND_CONFIG=$WORK/trytond.conf python load_demo.py DBNAME SEED_DIR

SEED_DIR holds the embedded ERP's migrations
(system-apis/migrations/embedded/sqlite/*.sql); they are replayed into an in-memory
SQLite database and read back, so Tryton gets exactly the same catalogue:

* warehouses -> stock.location type "warehouse", code = warehouse code
  (WH-NORTH reuses Tryton's default "WH"), each with its own input, output
  and storage zones (IN-/OUT-/STO-<suffix>), sharing the Lost and Found;
* products -> product.template + one product.product; SKU = code, name,
  description on the variant, list price in EUR (on the template and on
  the variant), unit "Unit", salable,
  goods, account category "Goods (no tax)" (the embedded ERP has no taxes);
* stock -> one confirmed stock.inventory per storage zone;
* customers -> party.party with code = external id (parties without one
  get the next number of Tryton's party sequence), an email contact
  mechanism, the seeded address (country created on demand), customer
  payment term "Direct", the receivable account and, with the
  sale_credit_limit module, credit_limit_amount (a 0.00 limit stays unset).

Runs in-process through proteus (no server). Runs the company setup first
(setup_company.py). Skips what already exists. Prints the ids as JSON.
"""
import glob
import json
import os
import sqlite3
import sys
from decimal import Decimal

from proteus import Model
from proteus import config as pconfig

import setup_company

COUNTRIES = {'DE': 'Germany', 'AT': 'Austria', 'CH': 'Switzerland',
    'FR': 'France', 'NL': 'Netherlands', 'US': 'United States'}


def read_seed(seed_dir):
    db = sqlite3.connect(':memory:')
    db.row_factory = sqlite3.Row
    files = sorted(glob.glob(os.path.join(seed_dir, '*.sql')))
    if not files:
        sys.exit('no *.sql in %s' % seed_dir)
    for path in files:
        with open(path, encoding='utf-8') as f:
            db.executescript(f.read())

    def rows(sql):
        return [dict(r) for r in db.execute(sql)]

    return {
        'warehouses': rows('SELECT code, name FROM warehouses ORDER BY code'),
        'products': rows('SELECT * FROM products ORDER BY sku'),
        'stock': rows('SELECT warehouse, sku, on_hand FROM stock'
            ' ORDER BY warehouse, sku'),
        'customers': rows('SELECT * FROM customers ORDER BY id'),
        'addresses': rows('SELECT * FROM addresses ORDER BY id'),
        }


def warehouses(seed):
    Location = Model.get('stock.location')
    found = {}
    for wh in seed['warehouses']:
        suffix = wh['code'].split('-', 1)[-1]
        existing = Location.find(
            [('type', '=', 'warehouse'), ('code', '=', wh['code'])])
        if existing:
            found[wh['code']] = existing[0]
            continue
        default = Location.find(
            [('type', '=', 'warehouse'), ('code', '=', 'WH')])
        if default:
            # reuse the warehouse the stock module ships (it owns the
            # default Lost and Found and is what sales default to)
            loc = default[0]
        else:
            loc = Location(type='warehouse')
            lost_found = Location.find([('type', '=', 'lost_found')], limit=1)
            if lost_found:
                loc.lost_found_location = lost_found[0]
            for zone in ('input', 'output', 'storage'):
                z = Location(type='storage', name=zone)
                z.save()
                setattr(loc, '%s_location' % zone, z)
        loc.name = wh['name']
        loc.code = wh['code']
        loc.save()
        for zone, prefix, label in (('input', 'IN', 'Input Zone'),
                ('output', 'OUT', 'Output Zone'),
                ('storage', 'STO', 'Storage Zone')):
            z = getattr(loc, '%s_location' % zone)
            z.name = '%s %s' % (label, wh['name'])
            z.code = '%s-%s' % (prefix, suffix)
            z.save()
        found[wh['code']] = Location(loc.id)
    return found


def products(seed, ids):
    Template = Model.get('product.template')
    Product = Model.get('product.product')
    unit = Model.get('product.uom')(ids['uom_unit'])
    category = Model.get('product.category')(ids['account_category_notax'])
    found = {}
    for p in seed['products']:
        existing = Product.find([('code', '=', p['sku'])])
        if existing:
            found[p['sku']] = existing[0]
            continue
        if p['currency'] != ids['currency_code']:
            sys.exit('%s is priced in %s, the company uses %s'
                % (p['sku'], p['currency'], ids['currency_code']))
        t = Template(name=p['name'], code=p['sku'], type='goods',
            default_uom=unit, sale_uom=unit, salable=True,
            list_price=Decimal(p['list_price']), account_category=category,
            active=bool(p['active']))
        if t.products:
            variant = t.products[0]
        else:
            variant = t.products.new()
        variant.description = p['description'] or None
        # 8.x variants have their own list_price (None = use the template's);
        # set both so that reading product.product list_price gives the price
        variant.list_price = Decimal(p['list_price'])
        t.save()
        found[p['sku']] = t.products[0]
    return found


def stock(seed, locations, prods):
    Inventory = Model.get('stock.inventory')
    count = 0
    for code, wh in locations.items():
        storage = wh.storage_location
        if Inventory.find([('location', '=', storage.id),
                    ('state', '=', 'done')]):
            continue
        inv = Inventory(location=storage)
        for row in seed['stock']:
            if row['warehouse'] == code and row['on_hand'] > 0:
                inv.lines.new(product=prods[row['sku']],
                    quantity=float(row['on_hand']))
                count += 1
        if inv.lines:
            inv.save()
            inv.click('confirm')
    return count


def customers(seed, ids, credit_limit):
    Party = Model.get('party.party')
    Mechanism = Model.get('party.contact_mechanism')
    Country = Model.get('country.country')
    PaymentTerm = Model.get('account.invoice.payment_term')
    Account = Model.get('account.account')
    term = PaymentTerm(ids['payment_term'])
    receivable = Account(ids['account_receivable'])
    addresses = {a['customer_id']: a for a in seed['addresses']}
    countries = {}

    def country(code):
        if not code:
            return None
        if code not in countries:
            found = Country.find([('code', '=', code)])
            if found:
                countries[code] = found[0]
            else:
                c = Country(name=COUNTRIES.get(code, code), code=code)
                c.save()
                countries[code] = c
        return countries[code]

    found = {}
    for c in seed['customers']:
        key = c['external_id'] or c['email']
        if c['external_id']:
            existing = Party.find([('code', '=', c['external_id'])])
        else:
            existing = [m.party for m in Mechanism.find(
                    [('type', '=', 'email'), ('value', '=', c['email'])])]
        if existing:
            found[key] = existing[0]
            continue
        party = Party(name=c['name'])
        if c['external_id']:
            party.code = c['external_id']
        if c['email']:
            party.contact_mechanisms.new(type='email', value=c['email'])
        address = party.addresses[0] if party.addresses \
            else party.addresses.new()
        a = addresses.get(c['id'])
        if a:
            address.street = a['street']
            address.city = a['city']
            address.postal_code = a['postal_code'] or None
            address.country = country(a['country'])
        party.customer_payment_term = term
        party.account_receivable = receivable
        # A limit of 0.00 (no credit: card orders only) stays unset: Tryton
        # would refuse to confirm any sale for the party (UserWarning
        # "will exceed their credit limit"); read back it is 0.00 all the same.
        if credit_limit and c['credit_limit'] and Decimal(c['credit_limit']):
            party.credit_limit_amount = Decimal(c['credit_limit'])
        party.save()
        found[key] = party
    return found


def main():
    dbname = sys.argv[1] if len(sys.argv) > 1 else 'erp'
    seed_dir = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)),
        '..', '..', 'system-apis', 'migrations', 'embedded')
    seed = read_seed(seed_dir)
    cfg = pconfig.set_trytond(
        dbname, config_file=os.environ.get('TRYTOND_CONFIG'))
    ids = setup_company.setup(cfg)
    Party = Model.get('party.party')
    credit_limit = 'credit_limit_amount' in Party._fields

    locations = warehouses(seed)
    prods = products(seed, ids)
    lines = stock(seed, locations, prods)
    parties = customers(seed, ids, credit_limit)

    ids.update({
        'warehouses': {code: {'id': wh.id,
                'storage': wh.storage_location.id,
                'storage_code': wh.storage_location.code}
            for code, wh in locations.items()},
        'products': {sku: p.id for sku, p in prods.items()},
        'inventory_lines': lines,
        'customers': {key: {'id': p.id, 'code': p.code,
                'address': p.addresses[0].id}
            for key, p in parties.items()},
        'credit_limits': credit_limit,
        })
    print(json.dumps(ids, indent=1))


if __name__ == '__main__':
    main()
