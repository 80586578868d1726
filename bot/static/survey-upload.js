// The survey templates page (bot/templates/dashboard/surveys.html): a chosen YAML file is read
// into the definition's text area, which the form sends; a file, so the CSP needs no inline script.
document.querySelectorAll("input[type=file][data-fills]").forEach((input) => {
  input.addEventListener("change", async () => {
    const file = input.files && input.files[0];
    if (file) document.getElementById(input.dataset.fills).value = await file.text();
  });
});
