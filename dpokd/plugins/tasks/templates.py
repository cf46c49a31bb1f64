"""The reference experiment's prompt templates, shared by the tasks and judges that use them."""

SUMMARY_TEMPLATE = 'Given the following Python code, provide a summary of its functionality: "{code}"'
CODEGEN_TEMPLATE = (
    'Write a Python function that solves the following problem: "{problem}" Your function should take appropriate '
    "input (if any) and return the expected output. Feel free to provide any additional context or constraints "
    "necessary for solving the problem."
)
