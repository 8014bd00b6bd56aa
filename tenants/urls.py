from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from tenants import auth, views

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="console-home"), name="root"),
    path("login/", auth.LoginView.as_view(), name="login"),
    path("login/code/", auth.login_code, name="login-code"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("account/two-factor/", auth.second_factor, name="second-factor"),
    # Password reset by e-mail: Django's views. The mailed link carries its token in the
    # fragment (/reset/#<uid>/<token>), like invitations, so no access log sees it; the page posts
    # it into the session, where Django's confirm view reads it at its token-less URL. Django's
    # own form, /reset/<uid>/<token>/, is not routed.
    path("password-reset/", auth.ThrottledPasswordResetView.as_view(), name="password_reset"),
    path(
        "password-reset/sent/",
        auth_views.PasswordResetDoneView.as_view(),
        name="password_reset_done",
    ),
    path("reset/", auth.password_reset_link, name="password_reset_link"),
    path(
        "reset/<uidb64>/set-password/",
        auth_views.PasswordResetConfirmView.as_view(),
        {"token": auth_views.PasswordResetConfirmView.reset_url_token},
        name="password_reset_confirm",
    ),
    path(
        "reset/done/",
        auth_views.PasswordResetCompleteView.as_view(),
        name="password_reset_complete",
    ),
    path("console/", views.console_home, name="console-home"),
    path("t/<slug:tenant_slug>/", views.tenant_dashboard, name="tenant-dashboard"),
    path("t/<slug:tenant_slug>/api-keys/", views.api_key_list, name="api-key-list"),
    path(
        "t/<slug:tenant_slug>/api-keys/<int:api_key_id>/revoke/",
        views.api_key_revoke,
        name="api-key-revoke",
    ),
    path("t/<slug:tenant_slug>/widget-keys/", views.widget_key_list, name="widget-key-list"),
    path(
        "t/<slug:tenant_slug>/widget-keys/<int:widget_key_id>/",
        views.widget_key_detail,
        name="widget-key-detail",
    ),
    path(
        "t/<slug:tenant_slug>/widget-keys/<int:widget_key_id>/revoke/",
        views.widget_key_revoke,
        name="widget-key-revoke",
    ),
    path("t/<slug:tenant_slug>/credentials/", views.credentials, name="credentials"),
    path("t/<slug:tenant_slug>/data/", views.data_retention, name="data-retention"),
    path("t/<slug:tenant_slug>/data-policy/", views.data_policy, name="data-policy"),
    path("t/<slug:tenant_slug>/members/", views.member_list, name="member-list"),
    path(
        "t/<slug:tenant_slug>/members/<int:membership_id>/role/",
        views.member_role,
        name="member-role",
    ),
    path(
        "t/<slug:tenant_slug>/members/<int:membership_id>/remove/",
        views.member_remove,
        name="member-remove",
    ),
    path(
        "t/<slug:tenant_slug>/invitations/<int:invitation_id>/revoke/",
        views.invitation_revoke,
        name="invitation-revoke",
    ),
    path("t/<slug:tenant_slug>/audit/", views.audit_log, name="audit-log"),
    path("invitations/", views.invitation_accept, name="invitation-accept"),
    # Anything below it is the retired link form (the token in the path): refused, no look-up.
    path("invitations/<path:token>", views.invitation_link_retired),
    path("t/<slug:tenant_slug>/", include("agents.console_urls")),
    path("t/<slug:tenant_slug>/", include("billing.console_urls")),
]
