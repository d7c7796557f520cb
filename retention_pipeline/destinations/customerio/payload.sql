-- Customer.io: the person's email, tier/reason and their home account's features (messaging: raw email is the
-- point; nothing here goes to an ad platform). NULL for a routed account without contacts.
CASE WHEN r.person_id IS NOT NULL THEN json_object(
    'email', p.email, 'tier', coalesce(r.tier, 'member'), 'reason', r.reason, 'account', r.customer_id,
    'features', json_object(
        'usage_7d', f.usage_7d, 'usage_prior_7d', f.usage_prior_7d,
        'wow_usage_change_pct', round(f.wow_usage_change_pct, 1),
        'days_since_last_usage', f.days_since_last_usage, 'days_to_renewal', f.days_to_renewal,
        'credit_balance', f.credit_balance,
        'days_until_credits_depleted', round(f.days_until_credits_depleted, 1),
        'credit_used_pct', round(f.credit_used_pct, 1), 'has_failed_payment', f.has_failed_payment))
END
