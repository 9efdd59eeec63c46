"""Forms of the pages: sign-up, the My drawings filter, and deleting the account."""

from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import UserCreationForm
from django.db.models import F, Q, QuerySet


class SignUpForm(UserCreationForm):
    email = forms.EmailField(required=True, help_text="For password resets only.")

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ["username", "email"]


class DrawingFilterForm(forms.Form):
    RESULTS = [("", "Any result"), ("right", "Right"), ("wrong", "Wrong"), ("unlabelled", "Not labelled yet")]

    digit = forms.TypedChoiceField(
        choices=[("", "Any digit")] + [(str(d), str(d)) for d in range(10)], coerce=int, empty_value=None,
        required=False,
    )
    result = forms.ChoiceField(choices=RESULTS, required=False)

    def filter(self, drawings: QuerySet) -> QuerySet:
        """A drawing's digit is its label when it has one, otherwise what the model said."""
        if not self.is_valid():
            return drawings
        digit, result = self.cleaned_data.get("digit"), self.cleaned_data.get("result")
        if digit is not None:
            drawings = drawings.filter(Q(label=digit) | Q(label__isnull=True, predicted_digit=digit))
        if result == "right":
            drawings = drawings.filter(label=F("predicted_digit"))
        elif result == "wrong":
            drawings = drawings.filter(label__isnull=False).exclude(label=F("predicted_digit"))
        elif result == "unlabelled":
            drawings = drawings.filter(label__isnull=True)
        return drawings


class DeleteAccountForm(forms.Form):
    password = forms.CharField(widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}), strip=False,
                               help_text="Your password, to confirm.")

    def __init__(self, user, *args, **kwargs) -> None:
        self.user = user
        super().__init__(*args, **kwargs)

    def clean_password(self) -> str:
        password = self.cleaned_data["password"]
        if not self.user.check_password(password):
            raise forms.ValidationError("The password is not right: your account is kept.")
        return password
