#!/usr/bin/env python3
"""Business setup of a fresh Tryton database for erp-connect.

Currency EUR, the company, a chart of accounts (generic English template),
a fiscal year covering today with its sequences, a 10 % tax, two account
categories (taxed / untaxed), the payment term "Direct" and the invoice
payment method "Cash". Adapted from shared/tryton/setup_company.py.

Runs in-process (proteus "trytond" backend, no server needed):
    TRYTOND_CONFIG=$WORK/trytond.conf python setup_company.py DBNAME
or is imported by load_demo.py (`setup(cfg)`). Prints a JSON summary of the
ids on stdout. Does nothing when a company already exists.
"""
import datetime as dt
import json
import os
import sys
from decimal import Decimal

from proteus import Model, Wizard
from proteus import config as pconfig

COMPANY_NAME = 'erp-connect Demo GmbH'
PAYMENT_TERM = 'Direct'
PAYMENT_METHOD = 'Cash'
CATEGORY_TAXED = 'Goods (VAT 10%)'
CATEGORY_UNTAXED = 'Goods (no tax)'


def eur():
    Currency = Model.get('currency.currency')
    found = Currency.find([('code', '=', 'EUR')])
    if found:
        return found[0]
    currency = Currency(name='Euro', code='EUR', symbol='€',
        rounding=Decimal('0.01'), digits=2)
    currency.save()
    return currency


def setup(cfg):
    """Create everything; return a dict of the ids (also on a re-run)."""
    Company = Model.get('company.company')
    Party = Model.get('party.party')
    User = Model.get('res.user')

    if not Company.find():
        currency = eur()
        # the wizard also attaches the company to the admin user
        w = Wizard('company.company.config')
        w.execute('company')
        w.form.party = Party(name=COMPANY_NAME)
        w.form.party.save()
        w.form.currency = currency
        w.execute('add')
        # reload the user context so that it carries company=<id>
        cfg._context = User.get_preferences(True, {})
        company, = Company.find()
        _accounting(cfg, company)
    cfg._context = User.get_preferences(True, {})
    return summary()


def _accounting(cfg, company):
    Account = Model.get('account.account')
    AccountTemplate = Model.get('account.account.template')
    ModelData = Model.get('ir.model.data')

    # 1. chart of accounts from the generic English template
    root_tpl = AccountTemplate(
        ModelData.get_id('account.account_template_root_en', cfg.context))
    cc = Wizard('account.create_chart')
    cc.execute('account')
    cc.form.account_template = root_tpl
    cc.form.company = company
    cc.execute('create_account')

    def acc(kind):
        return Account.find([('type.%s' % kind, '=', True),
                ('company', '=', company.id), ('closed', '!=', True)],
            limit=1)[0]

    receivable, payable = acc('receivable'), acc('payable')
    revenue, expense = acc('revenue'), acc('expense')
    cash, = Account.find([('company', '=', company.id), ('code', '=', '1.1.1')])
    tax_acc, = Account.find(
        [('company', '=', company.id), ('code', '=', '6.3.6')])
    cc.form.account_receivable = receivable
    cc.form.account_payable = payable
    cc.form.category_account_revenue = revenue
    cc.form.category_account_expense = expense
    cc.execute('create_properties')

    # 2. fiscal year covering today (posting fails outside it), with strict
    #    sequences for moves and invoices
    FiscalYear = Model.get('account.fiscalyear')
    SeqStrict = Model.get('ir.sequence.strict')
    SeqType = Model.get('ir.sequence.type')
    today = dt.date.today()
    fy = FiscalYear(name=str(today.year), company=company,
        start_date=dt.date(today.year, 1, 1),
        end_date=dt.date(today.year, 12, 31))
    move_seq = SeqStrict(name='Moves %s' % today.year, company=company,
        sequence_type=SeqType.find(
            [('name', '=', 'Account Move')], limit=1)[0])
    move_seq.save()
    fy.move_sequence = move_seq
    inv_seq = SeqStrict(name='Invoices %s' % today.year, company=company,
        sequence_type=SeqType.find([('name', '=', 'Invoice')], limit=1)[0])
    inv_seq.save()
    s, = fy.invoice_sequences
    s.out_invoice_sequence = s.in_invoice_sequence = inv_seq
    s.out_credit_note_sequence = s.in_credit_note_sequence = inv_seq
    fy.save()
    fy.click('create_period')

    # 3. a 10 % tax and two account categories (taxed / untaxed)
    Tax = Model.get('account.tax')
    tax = Tax(name='VAT 10%', description='VAT 10%', type='percentage',
        rate=Decimal('0.10'), invoice_account=tax_acc,
        credit_note_account=tax_acc)
    tax.save()
    Category = Model.get('product.category')
    cat = Category(name=CATEGORY_TAXED, accounting=True,
        account_revenue=revenue, account_expense=expense)
    cat.customer_taxes.append(Tax(tax.id))
    cat.save()
    Category(name=CATEGORY_UNTAXED, accounting=True,
        account_revenue=revenue, account_expense=expense).save()

    # 4. payment term: remainder due on the invoice date
    PaymentTerm = Model.get('account.invoice.payment_term')
    pt = PaymentTerm(name=PAYMENT_TERM)
    pt.lines.new(type='remainder')
    pt.save()

    # 5. invoice payment method (used by the account.invoice.pay wizard)
    Journal = Model.get('account.journal')
    PaymentMethod = Model.get('account.invoice.payment.method')
    cash_journal, = Journal.find([('type', '=', 'cash')])
    PaymentMethod(name=PAYMENT_METHOD, journal=cash_journal, company=company,
        credit_account=cash, debit_account=cash).save()


def summary():
    Company = Model.get('company.company')
    Account = Model.get('account.account')
    company, = Company.find()

    def one(model, domain):
        return Model.get(model).find(domain, limit=1)[0].id

    return {
        'company': company.id,
        'currency': company.currency.id,
        'currency_code': company.currency.code,
        'fiscalyear': one('account.fiscalyear', []),
        'payment_term': one('account.invoice.payment_term',
            [('name', '=', PAYMENT_TERM)]),
        'payment_method': one('account.invoice.payment.method',
            [('name', '=', PAYMENT_METHOD)]),
        'tax': one('account.tax', [('name', '=', 'VAT 10%')]),
        'account_category': one('product.category',
            [('name', '=', CATEGORY_TAXED)]),
        'account_category_notax': one('product.category',
            [('name', '=', CATEGORY_UNTAXED)]),
        'account_receivable': one('account.account',
            [('type.receivable', '=', True), ('closed', '!=', True)]),
        'account_revenue': one('account.account',
            [('type.revenue', '=', True), ('closed', '!=', True)]),
        'cash_account': Account.find([('code', '=', '1.1.1')])[0].id,
        'uom_unit': one('product.uom', [('name', '=', 'Unit')]),
        }


if __name__ == '__main__':
    dbname = sys.argv[1] if len(sys.argv) > 1 else 'erp'
    cfg = pconfig.set_trytond(
        dbname, config_file=os.environ.get('TRYTOND_CONFIG'))
    print(json.dumps(setup(cfg), indent=1))
