"""The emails this package sends: subjects here, bodies in ``templates/email``.

The app passes :data:`EMAILS` to core's ``EmailTemplates`` with the other packages' sets.
"""

from aixiate_core.email_templates import EmailTemplateSet, package_templates

EMAILS: EmailTemplateSet = package_templates(
    "aixiate_auth",
    {
        "verify_email": "Confirm your email address for {product_name}",
        "account_exists": "Someone tried to register with your email at {product_name}",
        "password_reset": "Reset your {product_name} password",
        "password_changed": "Your {product_name} password was changed",
        "session_reuse": "Security alert: your {product_name} session was ended",
        "account_locked": "Your {product_name} account was locked",
        "mfa_enabled": "Two-step verification is on for your {product_name} account",
        "mfa_disabled": "Two-step verification was turned off for your {product_name} account",
        "mfa_reset": "An administrator turned off two-step verification at {product_name}",
        "mfa_recovery_code_used": "A recovery code was used to sign in to {product_name}",
        "mfa_recovery_codes_regenerated": "New recovery codes for your {product_name} account",
        "invitation": "You are invited to {product_name}",
        "identity_linked": "A sign-in provider was linked to your {product_name} account",
        "identity_unlinked": "A sign-in provider was removed from your {product_name} account",
    },
)
